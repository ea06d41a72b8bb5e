"""Accuracy without labels: confidence-based performance estimation (CBPE, as NannyML calls it).

When a model's probabilities are calibrated, its top probability is the chance that the row's
prediction is right, so the expected accuracy of a set of rows is the mean top probability and the
number right is a sum of independent Bernoulli trials (a Poisson-binomial count): its variance is
``sum c (1 - c)`` over the rows' top probabilities ``c``, which gives the interval. The expected
confusion matrix (``[true, predicted]``: each row adds its probabilities to the column of its
predicted class) gives each class's expected precision, recall and F1. Probabilities that are not
calibrated can be calibrated first on labelled reference rows
([`probhook.calibrators`][probhook.calibrators]).

Rows whose probabilities are not finite (NaN or inf logits upstream) are left out and counted
(``excluded``). The state is streaming: ``update`` chunk by chunk, ``merge`` across workers.

Examples:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [np.nan, np.nan]])
    >>> est = expected_accuracy(probs, labels=["no", "yes"])
    >>> round(est.accuracy, 3), est.n, est.excluded
    (0.8, 3, 1)
    >>> round(est.per_class[0].precision, 2), round(est.per_class[0].recall, 2)
    (0.85, 0.85)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.calibrators import Calibrator, as_calibrator, fit_calibrator
from probhook.chunk import Factorized, factorize
from probhook.metrics import as_probs
from probhook.scan import open_rows, same_labels

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ClassEstimate:
    """One class: ``predicted`` rows, expected ``precision`` (the mean top probability of the rows
    predicted as it, with its interval), expected ``recall`` and ``f1``, and ``support`` (the
    expected number of rows truly of this class)."""

    label: str
    predicted: int
    precision: float
    precision_lower: float
    precision_upper: float
    recall: float
    f1: float
    support: float


@dataclass(frozen=True)
class AccuracyEstimate:
    """Expected accuracy of ``n`` rows with its interval at ``level`` (``lower`` .. ``upper``),
    the rows ``excluded`` (not finite), the calibration used, per-class estimates and, with
    ``by=``, one estimate per group."""

    accuracy: float
    lower: float
    upper: float
    std: float
    n: int
    excluded: int
    level: float
    calibration: str
    per_class: tuple[ClassEstimate, ...]
    groups: dict[Any, AccuracyEstimate] = field(default_factory=dict)

    def to_pandas(self) -> Any:
        """One row for all rows (group ``"(all)"``) and one per group: n, accuracy, interval."""
        import pandas as pd

        items = [("(all)", self), *self.groups.items()]
        return pd.DataFrame(
            [
                {
                    "group": g,
                    "n": e.n,
                    "excluded": e.excluded,
                    "accuracy": e.accuracy,
                    "lower": e.lower,
                    "upper": e.upper,
                }
                for g, e in items
            ]
        )

    def classes_to_pandas(self) -> Any:
        """One row per class: predicted rows, expected precision (with its interval), recall,
        F1 and support."""
        import pandas as pd

        return pd.DataFrame([c.__dict__ for c in self.per_class])

    def __str__(self) -> str:
        note = f", {self.excluded} non-finite rows excluded" if self.excluded else ""
        return (
            f"estimated accuracy {self.accuracy:.3f} ({self.level:.0%} interval "
            f"{self.lower:.3f}-{self.upper:.3f}) over {self.n} rows{note}"
        )


class ConfidenceState:
    """Streaming sums for the estimate, per group (one group when rows are not grouped): rows,
    top probabilities and their Bernoulli variances per predicted class, and the expected
    confusion matrix."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.groups: list[Any] = []
        self._index: dict[Any, int] = {}
        c = n_classes
        self.count = np.zeros((0, c), np.int64)
        self.conf = np.zeros((0, c))
        self.var = np.zeros((0, c))
        self.confusion = np.zeros((0, c, c))  # [group, true, predicted]
        self.excluded: dict[Any, int] = {}

    def _codes(self, groups: npt.ArrayLike | Factorized | None, n: int) -> npt.NDArray[np.int64]:
        if groups is None:
            if not self.groups:
                self._grow([None])
            return np.zeros(n, np.int64)
        found = groups if isinstance(groups, Factorized) else factorize(groups)
        self._grow(found.values)
        lookup = np.array([self._index[v] for v in found.values], np.int64)
        return lookup[found.codes] if len(lookup) else np.zeros(0, np.int64)

    def _grow(self, new: Sequence[Any]) -> None:
        new = [g for g in new if g not in self._index]
        if not new:
            return
        for g in new:
            self._index[g] = len(self.groups)
            self.groups.append(g)
        k, c = len(new), self.n_classes
        self.count = np.concatenate([self.count, np.zeros((k, c), np.int64)])
        self.conf = np.concatenate([self.conf, np.zeros((k, c))])
        self.var = np.concatenate([self.var, np.zeros((k, c))])
        self.confusion = np.concatenate([self.confusion, np.zeros((k, c, c))])

    def update(
        self,
        probs: npt.ArrayLike,
        groups: npt.ArrayLike | Factorized | None = None,
        calibrator: Calibrator | None = None,
        predicted: npt.NDArray[np.intp] | None = None,
    ) -> None:
        """Add ``(n, C)`` rows (with their group values, aligned); with ``calibrator`` the
        probabilities are the calibrated ones. ``predicted``: each row's predicted column,
        aligned with the rows (an element's own class; the uncalibrated argmax when None)."""
        p = as_probs(probs)
        if p.shape[1] != self.n_classes:
            raise ValueError(f"expected {self.n_classes} classes, got rows of {p.shape[1]}")
        codes = self._codes(groups, len(p))
        finite = np.isfinite(p).all(axis=1)
        if not finite.all():
            for g, k in zip(*np.unique(codes[~finite], return_counts=True), strict=True):
                key = self.groups[int(g)]
                self.excluded[key] = self.excluded.get(key, 0) + int(k)
            p, codes = p[finite], codes[finite]
            predicted = None if predicted is None else np.asarray(predicted)[finite]
        if not len(p):
            return
        predicted = p.argmax(axis=1) if predicted is None else predicted
        q = p if calibrator is None else calibrator.apply(p)
        conf = q[np.arange(len(q)), predicted]
        c, size = self.n_classes, len(self.groups) * self.n_classes
        cell = codes * c + predicted
        self.count += np.bincount(cell, minlength=size).reshape(-1, c)
        self.conf += np.bincount(cell, conf, minlength=size).reshape(-1, c)
        self.var += np.bincount(cell, conf * (1.0 - conf), minlength=size).reshape(-1, c)
        for true in range(c):
            self.confusion[:, true, :] += np.bincount(cell, q[:, true], minlength=size).reshape(
                -1, c
            )

    def estimate(
        self,
        labels: Sequence[str],
        level: float = 0.95,
        calibration: str = "none",
        *,
        by: bool = False,
    ) -> AccuracyEstimate:
        """The estimate over every row (and, with ``by``, one per group)."""
        whole = _estimate(
            self.count.sum(0),
            self.conf.sum(0),
            self.var.sum(0),
            self.confusion.sum(0),
            sum(self.excluded.values()),
            labels,
            level,
            calibration,
        )
        if not by:
            return whole
        groups = {
            g: _estimate(
                self.count[i],
                self.conf[i],
                self.var[i],
                self.confusion[i],
                self.excluded.get(g, 0),
                labels,
                level,
                calibration,
            )
            for i, g in enumerate(self.groups)
        }
        for g in self.excluded:  # a group whose every row was excluded
            if g not in groups:
                groups[g] = _estimate(
                    np.zeros(len(labels)),
                    np.zeros(len(labels)),
                    np.zeros(len(labels)),
                    np.zeros((len(labels),) * 2),
                    self.excluded[g],
                    labels,
                    level,
                    calibration,
                )
        return AccuracyEstimate(**{**whole.__dict__, "groups": groups})


def _interval(mean: float, std: float, level: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return max(0.0, mean - z * std), min(1.0, mean + z * std)


def _ratio(a: Any, b: Any) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _estimate(
    count: Any,
    conf: Any,
    var: Any,
    confusion: Any,
    excluded: int,
    labels: Sequence[str],
    level: float,
    calibration: str,
) -> AccuracyEstimate:
    n = int(count.sum())
    accuracy = float(conf.sum() / n) if n else float("nan")
    std = float(np.sqrt(var.sum()) / n) if n else float("nan")
    lower, upper = _interval(accuracy, std, level) if n else (float("nan"),) * 2
    tp = np.diag(confusion)
    precision = _ratio(conf, count)
    recall = _ratio(tp, confusion.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    classes = []
    for k, label in enumerate(labels):
        lo, hi = _interval(float(precision[k]), float(np.sqrt(var[k]) / max(count[k], 1)), level)
        classes.append(
            ClassEstimate(
                str(label),
                int(count[k]),
                float(precision[k]),
                lo if count[k] else float("nan"),
                hi if count[k] else float("nan"),
                float(recall[k]),
                float(f1[k]),
                float(confusion[k].sum()),
            )
        )
    return AccuracyEstimate(
        accuracy, lower, upper, std, n, excluded, level, calibration, tuple(classes)
    )


def expected_accuracy(
    probs: npt.ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    calibrator: Calibrator | None = None,
    groups: npt.ArrayLike | None = None,
    level: float = 0.95,
    predicted: npt.NDArray[np.intp] | None = None,
) -> AccuracyEstimate:
    """The estimate for ``(n, C)`` probabilities (the functional form of
    [`HeadView.estimate_accuracy`][probhook.HeadView.estimate_accuracy]); ``groups`` aligned
    with the rows gives one estimate per group; ``predicted``: each row's predicted column
    (an element's own class, see [`probhook.row_scores`][probhook.row_scores]), else its
    argmax."""
    p = as_probs(probs)
    names = list(labels) if labels is not None else [str(i) for i in range(p.shape[1])]
    state = ConfidenceState(p.shape[1])
    state.update(p, groups, calibrator, predicted)
    method = "none" if calibrator is None else calibrator.method
    return state.estimate(names, level, method, by=groups is not None)


def labelled_probs(
    source: Any, targets: Sequence[Any]
) -> tuple[Array, npt.NDArray[np.int64], tuple[str, ...]]:
    """The probabilities of a labelled source (read whole: labelled sets are small), its
    targets as class indices (label names or indices), and its labels."""
    rows = open_rows(source)
    chunks = [c.probs for c in rows.chunks()]
    p = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, len(rows.labels)))
    arr = np.asarray(targets)
    if arr.shape != (len(p),):
        raise ValueError(f"{rows.origin} has {len(p)} rows but {arr.shape} targets were given")
    if arr.dtype.kind in "iu":
        t = arr.astype(np.int64)
    else:
        index = {label: i for i, label in enumerate(rows.labels)}
        unknown = sorted({str(x) for x in arr.tolist()} - set(index))
        if unknown:
            raise ValueError(
                f"targets name classes that are not among the labels {list(rows.labels)}: {unknown}"
            )
        t = np.array([index[str(x)] for x in arr.tolist()], np.int64)
    return p, t, rows.labels


def estimate_accuracy(
    source: Any,
    calibrate_on: Any = None,
    by: Any = None,
    *,
    method: str = "temperature",
    level: float = 0.95,
) -> AccuracyEstimate:
    """The estimate for any source (a capture, a head, a loaded file, a file or folder read in
    chunks). ``calibrate_on``: a fitted map, or ``(reference, targets)`` to fit one with
    ``method`` on labelled reference rows (same labels). ``by``: a column name, or group values
    aligned with the rows."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    rows = open_rows(source)
    calibrator = calibrator_for(calibrate_on, rows.labels, method)
    state = ConfidenceState(len(rows.labels))
    column = [by] if isinstance(by, str) else []
    values = None if by is None or isinstance(by, str) else np.asarray(by)
    start = 0
    for chunk in rows.chunks(column):
        groups: Factorized | npt.NDArray[Any] | None = None
        if isinstance(by, str):
            groups = chunk.columns.factorize(by)
        elif values is not None:
            groups = values[start : start + len(chunk)]
        start += len(chunk)
        if not isinstance(groups, np.ndarray) or len(groups) == len(chunk):  # else: refused below
            state.update(chunk.probs, groups, calibrator, chunk.at)
    if values is not None and start != len(values):
        raise ValueError(f"by= has {len(values)} values for {start} rows of {rows.origin}")
    n = int(state.count.sum())
    if n == 0:
        excluded = sum(state.excluded.values())
        why = f" ({excluded} rows with NaN or inf probabilities were excluded)" if excluded else ""
        raise ValueError(f"{rows.origin} has no rows to estimate the accuracy of{why}")
    name = "none" if calibrator is None else calibrator.method
    return state.estimate(rows.labels, level, name, by=by is not None)


def calibrator_for(calibrate_on: Any, labels: tuple[str, ...], method: Any) -> Calibrator | None:
    """The map ``calibrate_on`` names: itself when fitted, fitted with ``method`` when it is
    ``(reference, targets)`` (the reference must have ``labels``), or None."""
    if not isinstance(calibrate_on, tuple):
        return as_calibrator(calibrate_on)
    if len(calibrate_on) != 2:
        raise ValueError("calibrate_on= takes a fitted map or (reference, targets)")
    probs, targets, ref_labels = labelled_probs(*calibrate_on)
    same_labels(ref_labels, labels, "the calibration reference")
    return fit_calibrator(probs, targets, method)
