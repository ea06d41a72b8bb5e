"""What the report page shows of each head of a run, gathered in one pass over its rows (files read
in chunks): the run's summary ([`RunStats`][probhook.run_stats.RunStats]), the least confident
rows, the labelled rows; then drift against the reference run's head of the same name, measured
accuracy and a review rule with a guarantee where labels are given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.chunk import Chunk
from probhook.drift import Drift, compare_stats
from probhook.elements import is_element_schema
from probhook.estimate import AccuracyEstimate, expected_accuracy
from probhook.labels_file import LabelTable
from probhook.review import NONE, ReviewRule, fewest_rows, review_threshold
from probhook.run_stats import RunStats, run_stats
from probhook.scan import EmptyRunError, Rows, run_heads, same_labels
from probhook.two_sample import FINE_BINS

QUEUE_ROWS = 25
"""Rows in a head's review queue."""
SHOWN_COLUMNS = ("file_name", "page_number", "word", "category_name", "key")
"""Columns of a queued row the page shows, where the rows have them."""


Labelled = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
"""A head's labelled rows: their probabilities, true classes and predicted columns."""


class Queue:
    """The ``size`` least confident rows seen so far (rows that are not finite first)."""

    def __init__(self, size: int, labels: tuple[str, ...]) -> None:
        self.size, self.labels = size, labels
        self.conf = np.zeros(0)
        self.predicted = np.zeros(0, np.int64)
        self.columns: dict[str, npt.NDArray[Any]] = {}

    def add(self, chunk: Chunk, names: list[str]) -> None:
        """Offer a chunk of rows (its columns ``names`` are read only for the rows kept)."""
        p = np.nan_to_num(np.asarray(chunk.probs, np.float64), nan=-1.0)
        finite = np.isfinite(chunk.probs).all(axis=1)
        predicted = p.argmax(axis=1) if chunk.at is None else chunk.at
        conf = np.where(finite, p[np.arange(len(p)), predicted], -np.inf)
        predicted = np.where(finite, predicted, -1)
        columns = chunk.columns
        if len(conf) > self.size:  # the chunk's own least confident rows first
            pick = np.argpartition(conf, self.size)[: self.size]
        else:
            pick = np.arange(len(conf))
        conf = np.concatenate([self.conf, conf[pick]])
        predicted = np.concatenate([self.predicted, predicted[pick]])
        merged = {n: np.concatenate([self.columns[n], columns.take(n, pick)])
                  if n in self.columns else columns.take(n, pick) for n in names}  # fmt: skip
        keep = np.argsort(conf, kind="stable")[: self.size]
        self.conf, self.predicted = conf[keep], predicted[keep]
        self.columns = {n: v[keep] for n, v in merged.items()}

    def rows(self) -> list[dict[str, Any]]:
        """The queued rows, least confident first: their shown columns, prediction and
        confidence (None for rows that are not finite)."""
        out = []
        for i in range(len(self.conf)):
            row = {n: _shown(v[i]) for n, v in self.columns.items()}
            finite = np.isfinite(self.conf[i])
            row["predicted"] = self.labels[int(self.predicted[i])] if finite else None
            row["confidence"] = float(self.conf[i]) if finite else None
            out.append(row)
        return out


def _shown(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class HeadReport:
    """One head of the run, as the page shows it."""

    name: str
    origin: str
    labels: tuple[str, ...]
    kind: str
    stats: RunStats
    queue: list[dict[str, Any]]
    reference: RunStats | None = None
    reference_origin: str | None = None
    drift: Drift | None = None
    labelled: Labelled | None = None
    measured: float | None = None
    labelled_estimate: AccuracyEstimate | None = None
    rule: ReviewRule | None = None
    to_review: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def estimate(self) -> AccuracyEstimate:
        """The run's estimated accuracy."""
        return self.stats.estimate()


def row_kind(columns: tuple[str, ...]) -> str:
    """``"words"``, ``"elements"``, ``"pages"`` or ``"rows"``, from a head's columns."""
    if "word_id" in columns:
        return "words"
    if is_element_schema(columns):  # a detector's rows: one per element, not per page
        return "elements"
    return "pages" if "image_id" in columns else "rows"


def _gather_head(rows: Rows, labels: LabelTable | None, queue_rows: int) -> HeadReport:
    stats = RunStats(rows.labels)
    queue = Queue(queue_rows, rows.labels)
    shown = [c for c in SHOWN_COLUMNS if c in rows.columns]
    id_columns = labels.needs(rows.columns) if labels is not None else []
    if labels is not None and not all(c in rows.columns for c in labels.by):
        id_columns = []  # this head's rows cannot be named that way: no labels for it
    if labels is not None and labels.by != ("key",) and row_kind(rows.columns) != "pages":
        id_columns = []  # a page (image_id, or file and page) names page rows, not its words
    probs, targets, at = [], [], []
    for chunk in rows.chunks([*shown, *id_columns]):
        stats.update(chunk.probs, chunk.at, chunk.sigmoid)
        queue.add(chunk, shown)
        if id_columns and labels is not None:
            t = labels.lookup(rows.name, rows.labels, chunk.columns)
            hit = t >= 0
            probs.append(np.asarray(chunk.probs[hit], np.float64))
            targets.append(t[hit])
            at.append(np.asarray(chunk.probs[hit].argmax(axis=1) if chunk.at is None
                                 else chunk.at[hit], np.int64))  # fmt: skip
    report = HeadReport(
        rows.name, rows.origin, rows.labels, row_kind(rows.columns), stats, queue.rows()
    )
    if probs and sum(len(t) for t in targets):
        report.labelled = (np.concatenate(probs), np.concatenate(targets), np.concatenate(at))
    return report


def _reference_for(name: str, heads: dict[str, Rows], refs: dict[str, Rows]) -> Rows | None:
    if name in refs:
        return refs[name]
    if len(heads) == 1 and len(refs) == 1:  # one head each: the same classifier, renamed
        return next(iter(refs.values()))
    return None


def _decide(report: HeadReport, max_error: float, delta: float, level: float) -> None:
    """Measured accuracy and the review rule, from the head's labelled rows."""
    if report.labelled is None:
        report.notes.append(
            "no labels for these rows: give --labels to measure the accuracy and "
            "to get a review threshold with a guarantee"
        )
        return
    probs, targets, at = report.labelled
    finite = np.isfinite(probs).all(axis=1)
    if not finite.any():
        report.notes.append(f"all {len(targets)} labelled rows have NaN or inf probabilities")
        return
    p, t = probs[finite], targets[finite]
    report.measured = float((at[finite] == t).mean())
    report.labelled_estimate = expected_accuracy(p, labels=report.labels, level=level,
                                                 predicted=at[finite])  # fmt: skip
    report.rule = review_threshold(probs, targets, max_error, delta, labels=report.labels,
                                   predicted=at)  # fmt: skip
    need = fewest_rows(max_error, delta)
    if report.rule.min_confidence == NONE and len(targets) < need:
        report.notes.append(
            f"{len(targets)} labelled rows cannot certify an error of at most "
            f"{max_error:g}: even with no error that needs at least {need}"
        )
    report.to_review = _count_below(report.stats, float(report.rule.min_confidence))  # type: ignore[arg-type]


def _count_below(stats: RunStats, threshold: float) -> tuple[int, int]:
    """Rows the rule sends to review (below the threshold, or not finite): exact, or between
    two counts when only the grid was kept."""
    if threshold == NONE:
        total = stats.n + stats.excluded
        return total, total
    if stats.exact:
        n = int((stats.values("confidence") < threshold).sum()) + stats.excluded
        return n, n
    h = stats.histogram("confidence")
    k = min(int(threshold * FINE_BINS), FINE_BINS - 1)
    return int(h[:k].sum()) + stats.excluded, int(h[: k + 1].sum()) + stats.excluded


def gather(
    run: str | os.PathLike[str],
    reference: str | os.PathLike[str] | None = None,
    labels: LabelTable | None = None,
    *,
    max_error: float = 0.02,
    delta: float = 0.05,
    queue_rows: int = QUEUE_ROWS,
    level: float = 0.95,
) -> list[HeadReport]:
    """Every head of ``run`` as the page shows it (``labels`` are checked once every head has
    been read: a line naming no row, or an unknown class, raises
    [`LabelsError`][probhook.labels_file.LabelsError])."""
    heads = run_heads(run)
    refs = run_heads(reference) if reference is not None else {}
    reports = [_gather_head(rows, labels, queue_rows) for rows in heads.values()]
    if labels is not None:
        labels.check()
    if not any(r.stats.n + r.stats.excluded for r in reports):
        raise EmptyRunError(f"{os.fspath(run)} holds no rows: nothing to report")
    for report in reports:
        ref_rows = _reference_for(report.name, heads, refs)
        if reference is not None and ref_rows is None:
            report.notes.append(f"no head {report.name!r} in the reference {Path(reference)}")
        if ref_rows is not None:
            same_labels(ref_rows.labels, report.labels, f"the reference {ref_rows.origin}")
            report.reference = run_stats(ref_rows)
            report.reference_origin = ref_rows.origin
            if report.stats.n and report.reference.n:
                report.drift = compare_stats(report.reference, report.stats, level)
            else:
                report.notes.append(
                    "drift needs rows in both runs: "
                    f"{report.reference.n} in the reference, "
                    f"{report.stats.n} here"
                )
        _decide(report, max_error, delta, level)
    return reports
