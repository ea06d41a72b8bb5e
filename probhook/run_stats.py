"""What drift tests and the report need of one run, gathered in one streaming pass: the accuracy
estimate's sums, per predicted class the top probability and normalised entropy counted on a fine
grid, and, up to [`EXACT_ROWS`][EXACT_ROWS] rows, those scores themselves (4 + 4 + 2 bytes a row)
so that KS is computed exactly; beyond that, from the grid, with its error bound.

Examples:
    >>> import numpy as np
    >>> stats = RunStats(("no", "yes"))
    >>> stats.update(np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]]))
    >>> stats.n, stats.excluded, stats.class_counts.tolist(), stats.exact
    (2, 1, [1, 1], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook import metrics, row_scores
from probhook.calibrators import Calibrator
from probhook.estimate import AccuracyEstimate, ConfidenceState
from probhook.scan import open_rows
from probhook.two_sample import FINE_BINS, fine_index

EXACT_ROWS = 20_000_000
"""Rows of one run whose scores are kept for exact KS (about 200 MB); a larger run keeps only
the grid counts."""
SCORES = ("confidence", "entropy")
"""The scores counted: top probability, and entropy divided by ``log C`` (both in ``[0, 1]``)."""
KEPT = {"confidence": np.float32, "entropy": np.float32, "predicted": np.int16}
"""What is kept of each row, up to [`EXACT_ROWS`][EXACT_ROWS] rows, and its type."""


class RunStats:
    """One run's streaming summary (see the module). ``update`` with chunks of ``(n, C)``
    probabilities; ``calibrator`` calibrates the accuracy estimate (not the scores)."""

    def __init__(
        self,
        labels: Sequence[str],
        *,
        exact_rows: int = EXACT_ROWS,
        calibrator: Calibrator | None = None,
    ) -> None:
        self.labels = tuple(labels)
        c = len(self.labels)
        self.confidence = ConfidenceState(c)
        self.calibrator = calibrator
        self.histograms = {s: np.zeros((c, FINE_BINS), np.int64) for s in SCORES}
        self.exact_rows = exact_rows
        # per column (confidence, entropy, predicted), the chunks' values
        self._kept: dict[str, list[npt.NDArray[Any]]] | None = {k: [] for k in KEPT}
        self._kept_rows = 0
        self.sums = {s: np.zeros(c) for s in SCORES}
        self.excluded = 0

    @property
    def n(self) -> int:
        """Rows counted (finite ones)."""
        return int(self.confidence.count.sum())

    @property
    def exact(self) -> bool:
        """Whether every row's scores are kept (KS on the values)."""
        return self._kept is not None

    @property
    def class_counts(self) -> npt.NDArray[np.int64]:
        """Rows per predicted class."""
        return np.asarray(self.confidence.count.sum(axis=0), np.int64)

    def update(
        self,
        probs: npt.ArrayLike,
        at: npt.NDArray[np.int64] | None = None,
        sigmoid: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Add a chunk of rows (``at``, ``sigmoid``: how they are measured, see
        [`probhook.row_scores`][probhook.row_scores]); non-finite rows are counted in
        ``excluded``."""
        p = metrics.as_probs(probs)
        finite = np.isfinite(p).all(axis=1)
        self.excluded += int((~finite).sum())
        if not finite.all():
            p = p[finite]
            at = None if at is None else at[finite]
            sigmoid = None if sigmoid is None else sigmoid[finite]
        if not len(p):
            return
        predicted, confidence, entropy = row_scores.scores(p, at, sigmoid)
        self.confidence.update(p, calibrator=self.calibrator, predicted=predicted)
        scores = {"confidence": confidence, "entropy": entropy}
        c = len(self.labels)
        for name, values in scores.items():
            self.sums[name] += np.bincount(predicted, values, minlength=c)
            cells = predicted * FINE_BINS + fine_index(values)
            self.histograms[name] += np.bincount(cells, minlength=c * FINE_BINS).reshape(c, -1)
        if self._kept is not None:
            self._kept_rows += len(p)
            if self._kept_rows > self.exact_rows:
                self._kept = None  # too many rows: the grid only
            else:
                self._kept["confidence"].append(scores["confidence"].astype(np.float32))
                self._kept["entropy"].append(scores["entropy"].astype(np.float32))
                self._kept["predicted"].append(predicted.astype(np.int16))

    def _column(self, name: str) -> npt.NDArray[Any]:
        """One kept column (confidence, entropy, predicted) over every chunk."""
        if self._kept is None:
            raise ValueError(f"more than {self.exact_rows} rows: their scores were not kept")
        parts = self._kept[name]
        if len(parts) != 1:  # joined once, in place of the chunks: one column's copy at a time
            parts[:] = [np.concatenate(parts) if parts else np.zeros(0, KEPT[name])]
        return parts[0]

    def values(self, score: str, predicted: int | None = None) -> npt.NDArray[np.float32]:
        """The kept values of ``score`` (of the rows predicted as class ``predicted``)."""
        values = self._column(score)
        return values if predicted is None else values[self._column("predicted") == predicted]

    def histogram(self, score: str, predicted: int | None = None) -> npt.NDArray[np.int64]:
        """Grid counts of ``score`` (of the rows predicted as class ``predicted``)."""
        h = self.histograms[score]
        return np.asarray(h.sum(axis=0) if predicted is None else h[predicted], np.int64)

    def mean(self, score: str, predicted: int | None = None) -> float:
        """Mean of ``score`` (of the rows predicted as class ``predicted``)."""
        counts = self.class_counts
        total, n = self.sums[score], counts
        if predicted is not None:
            return float(total[predicted] / n[predicted]) if n[predicted] else float("nan")
        return float(total.sum() / n.sum()) if n.sum() else float("nan")

    def estimate(self, level: float = 0.95) -> AccuracyEstimate:
        """The accuracy estimate of the run."""
        method = "none" if self.calibrator is None else self.calibrator.method
        est = self.confidence.estimate(self.labels, level, method)
        return AccuracyEstimate(**{**est.__dict__, "excluded": self.excluded})


def run_stats(
    source: Any, *, exact_rows: int = EXACT_ROWS, calibrator: Calibrator | None = None
) -> RunStats:
    """The summary of any source, read in chunks (files and folders never whole)."""
    rows = open_rows(source)
    stats = RunStats(rows.labels, exact_rows=exact_rows, calibrator=calibrator)
    for chunk in rows.chunks():
        stats.update(chunk.probs, chunk.at, chunk.sigmoid)
    return stats
