"""Confidence and calibration metrics over ``(n, C)`` probability arrays, vectorised.

>>> import numpy as np
>>> from probhook import metrics
>>> p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
>>> metrics.max_prob(p).tolist(), np.round(metrics.margin(p), 2).tolist()
([0.7, 0.4], [0.5, 0.05])
>>> metrics.flag(p, min_confidence=0.5).tolist()
[False, True]
>>> state = metrics.CalibrationState(n_bins=10)
>>> state.update(p, np.array([0, 1]))
>>> round(state.compute()["accuracy"], 2)
0.5

Equal-width bins are ``[i/B, (i+1)/B)`` with the last bin closed at 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def _probs(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, n_classes), got {arr.shape}")
    return arr


def _targets(targets: npt.ArrayLike, probs: Array) -> npt.NDArray[np.int64]:
    arr = np.asarray(targets)
    if arr.shape != (len(probs),):
        raise ValueError(f"targets must have shape ({len(probs)},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets must be class indices (integers), got dtype {arr.dtype}")
    if len(arr) and (arr.min() < 0 or arr.max() >= probs.shape[1]):
        raise ValueError(f"targets must lie in 0..{probs.shape[1] - 1}")
    return arr.astype(np.int64)


def max_prob(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The top probability of each row."""
    p = _probs(probs)
    return p.max(axis=1) if p.shape[1] else np.zeros(len(p))


def margin(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Top-1 minus top-2 probability (1.0 for a single class)."""
    p = _probs(probs)
    if p.shape[1] < 2:
        return np.ones(len(p))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(probs: npt.ArrayLike, *, normalized: bool = False) -> npt.NDArray[np.float64]:
    """Shannon entropy in nats; ``normalized`` divides by ``log C`` (0 = certain, 1 = uniform)."""
    p = _probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    if normalized:
        return h / np.log(p.shape[1]) if p.shape[1] > 1 else np.zeros(len(p))
    return np.asarray(h, dtype=np.float64)


def top_k(
    probs: npt.ArrayLike, k: int = 3
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Indices and probabilities of the ``k`` most probable classes per row, best first."""
    p = _probs(probs)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)


def flag(
    probs: npt.ArrayLike,
    *,
    min_confidence: float | None = None,
    min_margin: float | None = None,
    max_entropy: float | None = None,
) -> npt.NDArray[np.bool_]:
    """Rows to send to a person: below ``min_confidence`` or ``min_margin``, or above
    ``max_entropy`` (normalised entropy, 0..1). Non-finite rows are always flagged."""
    p = _probs(probs)
    out = ~np.isfinite(p).all(axis=1)
    if min_confidence is not None:
        out |= max_prob(p) < min_confidence
    if min_margin is not None:
        out |= margin(p) < min_margin
    if max_entropy is not None:
        out |= entropy(p, normalized=True) > max_entropy
    return np.asarray(out, dtype=bool)


def accuracy(probs: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    p = _probs(probs)
    return float((p.argmax(axis=1) == _targets(targets, p)).mean())


def nll(probs: npt.ArrayLike, targets: npt.ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at ``eps``)."""
    p = _probs(probs)
    t = _targets(targets, p)
    return float(-np.log(np.clip(p[np.arange(len(p)), t], eps, None)).mean())


def brier_score(probs: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """Mean over rows of ``sum_c (p_c - onehot_c)^2`` (0 best, 2 worst)."""
    p = _probs(probs)
    onehot = np.eye(p.shape[1])[_targets(targets, p)]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def _bin_index(conf: Array, n_bins: int) -> npt.NDArray[np.intp]:
    return np.minimum((conf * n_bins).astype(np.intp), n_bins - 1)


@dataclass(frozen=True)
class ReliabilityTable:
    """Per bin: edges, row count, mean confidence and accuracy (NaN where a bin is empty)."""

    lower: Array
    upper: Array
    count: Array
    confidence: Array
    accuracy: Array

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.__dict__)


def reliability_table(
    probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15
) -> ReliabilityTable:
    state = CalibrationState(n_bins)
    state.update(probs, targets)
    return state.reliability()


def calibration_error(
    probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15, norm: str = "l1"
) -> float:
    """Expected (``norm="l1"``, ECE) or maximum (``norm="max"``, MCE) calibration error over
    equal-width confidence bins."""
    if norm not in ("l1", "max"):
        raise ValueError(f"norm must be 'l1' (ECE) or 'max' (MCE), got {norm!r}")
    state = CalibrationState(n_bins)
    state.update(probs, targets)
    return state.compute()["ece" if norm == "l1" else "mce"]


def adaptive_calibration_error(
    probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15
) -> float:
    """ECE over equal-mass bins (each holds ~n/B rows sorted by confidence)."""
    p = _probs(probs)
    correct = (p.argmax(axis=1) == _targets(targets, p)).astype(np.float64)
    conf = max_prob(p)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(n_bins, max(len(order), 1))):
        if len(chunk):
            total += len(chunk) * abs(correct[chunk].mean() - conf[chunk].mean())
    return total / max(len(p), 1)


@dataclass
class CalibrationState:
    """Streaming calibration: memory O(bins) however many rows, with ``update/compute/merge``."""

    n_bins: int = 15
    n: int = 0
    correct: float = 0.0
    nll_sum: float = 0.0
    brier_sum: float = 0.0
    count: Array = field(init=False)
    conf_sum: Array = field(init=False)
    acc_sum: Array = field(init=False)

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        self.count = np.zeros(self.n_bins)
        self.conf_sum = np.zeros(self.n_bins)
        self.acc_sum = np.zeros(self.n_bins)

    def update(self, probs: npt.ArrayLike, targets: npt.ArrayLike) -> None:
        p = _probs(probs)
        t = _targets(targets, p)
        conf = max_prob(p)
        hit = (p.argmax(axis=1) == t).astype(np.float64)
        bins = _bin_index(conf, self.n_bins)
        self.count += np.bincount(bins, minlength=self.n_bins)
        self.conf_sum += np.bincount(bins, conf, minlength=self.n_bins)
        self.acc_sum += np.bincount(bins, hit, minlength=self.n_bins)
        self.n += len(p)
        self.correct += hit.sum()
        self.nll_sum += nll(p, t) * len(p) if len(p) else 0.0
        self.brier_sum += brier_score(p, t) * len(p) if len(p) else 0.0

    def merge(self, other: CalibrationState) -> CalibrationState:
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge {self.n_bins} bins with {other.n_bins}")
        out = CalibrationState(
            self.n_bins,
            self.n + other.n,
            self.correct + other.correct,
            self.nll_sum + other.nll_sum,
            self.brier_sum + other.brier_sum,
        )
        out.count, out.conf_sum = self.count + other.count, self.conf_sum + other.conf_sum
        out.acc_sum = self.acc_sum + other.acc_sum
        return out

    def reliability(self) -> ReliabilityTable:
        edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf, acc = self.conf_sum / self.count, self.acc_sum / self.count
        return ReliabilityTable(edges[:-1], edges[1:], self.count.astype(np.int64), conf, acc)

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no rows: call update() first")
        table = self.reliability()
        seen = self.count > 0
        gaps = np.abs(table.accuracy[seen] - table.confidence[seen])
        return {
            "n": float(self.n),
            "accuracy": float(self.correct / self.n),
            "nll": float(self.nll_sum / self.n),
            "brier": float(self.brier_sum / self.n),
            "ece": float((gaps * self.count[seen]).sum() / self.n),
            "mce": float(gaps.max()),
        }
