"""What the command line prints and writes: the per-page table or JSON lines, progress, the
summary, the finished rows file and the plot.

Rows go to stdout one line per page as soon as the page is classified (flushed, so a pipe sees
them at once); progress and the summary of a JSON run go to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from probhook import metrics
from probhook.distribution import Distribution

PROGRESS_STEPS = 10
"""Plain progress lines (not a terminal) come at every tenth of the pages..."""
PROGRESS_SECONDS = 30.0
"""...or after this many seconds without one, whichever comes first."""


@dataclass(frozen=True)
class PageResult:
    """One page as the command line reports it; ``dist`` is None for a page with no words.

    Confidence, margin and entropy come from [`probhook.metrics`][probhook.metrics], as in the rows
    file.
    """

    document: Path
    page: int
    image_id: str
    dist: Distribution | None
    min_confidence: float | None = None
    min_margin: float | None = None

    def _measure(self, name: str) -> float:
        assert self.dist is not None
        return float(getattr(metrics, name)(self.dist.probs[None])[0])

    @property
    def confidence(self) -> float:
        """Top probability."""
        return self._measure("max_prob")

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 probability."""
        return self._measure("margin")

    @property
    def entropy(self) -> float:
        """Shannon entropy in nats."""
        return self._measure("entropy")

    @property
    def flagged(self) -> bool:
        """Below ``min_confidence`` or ``min_margin``, or non-finite (NaN or inf: no prediction)."""
        if self.dist is None:
            return False
        if self.dist.predicted is None:
            return True
        low = self.min_confidence is not None and self.confidence < self.min_confidence
        return low or (self.min_margin is not None and self.margin < self.min_margin)


class Totals:
    """Running counts for the summary."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.flagged = self.unclassified = self.nonfinite = 0
        self.confidence_sum = 0.0
        self.documents: set[Path] = set()

    def add(self, result: PageResult) -> None:
        """Count one page."""
        self.documents.add(result.document)
        if result.dist is None:
            self.unclassified += 1
            return
        self.flagged += result.flagged
        predicted = result.dist.predicted
        if predicted is None:  # NaN or inf: no prediction, no confidence
            self.nonfinite += 1
            return
        self.counts[predicted] += 1
        self.confidence_sum += result.confidence

    @property
    def classified(self) -> int:
        """Pages with a distribution (finite or not)."""
        return sum(self.counts.values()) + self.nonfinite


class TableWriter:
    """The human-readable table: document, page, prediction, confidence, margin, top-k."""

    def __init__(self, names: list[str], labels: list[str], top_k: int) -> None:
        self.top_k = top_k
        self.width = max([len("document"), *map(len, names)])
        self.label_width = max([len("predicted"), *map(len, labels)])
        header = (f"{'document':<{self.width}} {'page':>4}  {'predicted':<{self.label_width}} "
                  f"{'conf':>5} {'margin':>6}  top-{top_k}")  # fmt: skip
        self.lines = [header, "-" * (len(header) + 12 * top_k)]

    def header(self) -> list[str]:
        """The two header lines (printed once, before the first page)."""
        return self.lines

    def line(self, r: PageResult) -> str:
        """One page's line."""
        name = r.document.name
        if r.dist is None:
            return f"{name:<{self.width}} {r.page:>4}  (no words: not classified)"
        if r.dist.predicted is None:
            return f"{name:<{self.width}} {r.page:>4}  (NaN or inf: no prediction)  <- review"
        tops = "  ".join(f"{label} {p:.2f}" for label, p in r.dist.top_k(self.top_k))
        return (f"{name:<{self.width}} {r.page:>4}  {r.dist.predicted:<{self.label_width}} "
                f"{r.confidence:>5.2f} {r.margin:>6.2f}  {tops}"
                f"{'  <- review' if r.flagged else ''}")  # fmt: skip


class JsonWriter:
    """One JSON object per page (``--format json``), for other tools to read."""

    def header(self) -> list[str]:
        """No header: every line is a page."""
        return []

    def line(self, r: PageResult) -> str:
        """One page as a JSON object on one line."""
        record: dict[str, Any] = {
            "document": str(r.document),
            "page": r.page,
            "image_id": r.image_id,
            "classified": r.dist is not None,
        }
        if r.dist is None:
            record.update(predicted=None, confidence=None, margin=None, entropy=None,
                          flagged=False, probs=None)  # fmt: skip
        elif r.dist.predicted is None:  # NaN or inf: JSON has no NaN, so null
            record.update(predicted=None, confidence=None, margin=None, entropy=None,
                          flagged=True, probs={k: None for k in r.dist.labels})  # fmt: skip
        else:
            record.update(predicted=r.dist.predicted, confidence=r.confidence, margin=r.margin,
                          entropy=r.entropy, flagged=r.flagged, probs=r.dist.as_dict())  # fmt: skip
        return json.dumps(record)


class Progress:
    """Pages and documents done, with rate and ETA: a tqdm bar on a terminal, a plain line at
    every tenth of the run (or every 30 s) otherwise, nothing when disabled."""

    def __init__(self, pages: int, documents: int, stream: TextIO, enabled: bool) -> None:
        self.pages, self.documents, self.stream = pages, documents, stream
        self.done_pages = self.done_documents = 0
        self.enabled = enabled
        self.start = self.last_line = time.monotonic()
        self.next_step = 1
        self.shown = (0, 0)
        self.bar: Any = None
        if enabled and stream.isatty():
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(total=pages, unit="page", file=stream, dynamic_ncols=True,
                            desc="classifying", postfix=self._postfix())  # fmt: skip

    def _postfix(self) -> str:
        return f"documents {self.done_documents}/{self.documents}"

    def write(self, line: str, out: TextIO) -> None:
        """Print a result line without tearing the bar."""
        if self.bar is not None:
            self.bar.clear()
            print(line, file=out, flush=True)
            self.bar.refresh()
        else:
            print(line, file=out, flush=True)

    def page_done(self) -> None:
        """One more page."""
        self.done_pages += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            self._maybe_line()

    def document_done(self) -> None:
        """One more document (classified or skipped)."""
        self.done_documents += 1
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix())

    def _maybe_line(self, force: bool = False) -> None:
        now = time.monotonic()
        step = self.done_pages * PROGRESS_STEPS // max(self.pages, 1)
        if not force and step < self.next_step and now - self.last_line < PROGRESS_SECONDS:
            return
        self.next_step, self.last_line = step + 1, now
        self.shown = (self.done_pages, self.done_documents)
        rate = self.done_pages / max(now - self.start, 1e-9)
        left = max(self.pages - self.done_pages, 0)
        eta = f"ETA {left / rate:.0f} s" if rate > 0 else "ETA unknown"
        print(f"progress: {self.done_pages}/{self.pages} pages, {self.done_documents}/"
              f"{self.documents} documents, {rate:.1f} pages/s, {eta}",
              file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        """End the bar, or print the final counts (the summary follows on its own line)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.shown != (self.done_pages, self.done_documents):
            self._maybe_line(force=True)


def summary_lines(
    totals: Totals, skipped: int, rows_file: Path | None, interrupted: str | None
) -> list[str]:
    """The closing lines: counts, mean confidence, flags, skipped inputs, where the rows are."""
    lines = [""]
    if interrupted and totals.classified:
        lines.append(f"interrupted by {interrupted}: stopped after {totals.classified} "
                     "classified pages; the rows file holds every one of them")  # fmt: skip
    elif interrupted:
        lines.append(f"interrupted by {interrupted} before any page was classified")
    pages, finite = totals.classified, totals.classified - totals.nonfinite
    if pages:
        mean = f"mean confidence {totals.confidence_sum / finite:.2f}; " if finite else ""
        lines.append(
            f"{pages} pages classified in {len(totals.documents)} documents; "
            f"{mean}{totals.flagged} flagged for review"
        )
        lines.append("predicted: " + ", ".join(f"{k} {n}" for k, n in totals.counts.most_common()))
    else:
        lines.append("no page classified")
    if totals.nonfinite:
        lines.append(f"{totals.nonfinite} pages had NaN or inf in the model output: no prediction")
    if totals.unclassified:
        lines.append(f"{totals.unclassified} pages had no words and were not classified")
    if skipped:
        lines.append(f"skipped {skipped} inputs (see warnings on stderr)")
    if rows_file is not None:
        lines.append(f"all rows: {rows_file}")
    else:
        lines.append("no rows file written")
    return lines


def print_lines(lines: list[str], out: TextIO | None = None) -> None:
    """Print ``lines`` to ``out`` (stdout by default)."""
    for line in lines:
        print(line, file=out or sys.stdout)


def finish_rows_file(path: Path, rows: int) -> Path | None:
    """The rows file, or None when this run wrote no row to it (a file there is an earlier
    run's). The sink wrote it complete, with the derived columns, when the capture closed."""
    return path if rows and path.exists() else None


def save_plot(cap: Any, path: Path, threshold: float | None = None) -> None:
    """The confidence histogram of the run, saved to ``path``, with the ``--min-confidence``
    ``threshold`` drawn and the rows below it counted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = cap.plot.confidence(bins=20, threshold=threshold)
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def write_failed(path: Path, error: Exception, err: TextIO) -> int:
    """Say that the rows file could not be written (a full disk) and what it holds; exit 1."""
    print(f"probhook: error: writing {path} failed ({error.__cause__ or error}); the rows "
          f"written before are kept: probhook.load('{path}') reads them", file=err)  # fmt: skip
    return 1


def devnull(out: TextIO) -> TextIO:
    """Where output goes once the reader of ``out`` left: nowhere (stdout's descriptor too,
    so that Python's flush at exit does not fail again)."""
    if out is sys.stdout:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return open(os.devnull, "w")  # lives as long as the run
