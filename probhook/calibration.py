"""Everything scored against true labels: accuracy, NLL, Brier, calibration error (ECE/MCE,
adaptive), reliability tables, a streaming state, temperature scaling and split conformal sets.

Examples:
    >>> import numpy as np
    >>> from probhook import calibration
    >>> p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    >>> state = calibration.CalibrationState(n_bins=10)
    >>> state.update(p, np.array([0, 1]))
    >>> round(state.compute()["accuracy"], 2)
    0.5
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(500, 4)) * 5
    >>> targets = (logits + rng.normal(size=(500, 4)) * 5).argmax(axis=1)
    >>> calibration.fit_temperature(logits, targets) > 1  # over-confident logits get softened
    True
    >>> probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    >>> q = calibration.conformal_threshold(probs, targets, alpha=0.1)
    >>> calibration.prediction_sets(probs, q).shape
    (500, 4)

Equal-width bins are ``[i/B, (i+1)/B)`` with the last bin closed at 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from probhook.metrics import as_probs, max_prob

Array = npt.NDArray[Any]


def _targets(targets: npt.ArrayLike, probs: Array) -> npt.NDArray[np.int64]:
    arr = np.asarray(targets)
    if arr.shape != (len(probs),):
        raise ValueError(f"targets must have shape ({len(probs)},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets must be class indices (integers), got dtype {arr.dtype}")
    if len(arr) and (arr.min() < 0 or arr.max() >= probs.shape[1]):
        raise ValueError(f"targets must lie in 0..{probs.shape[1] - 1}")
    return arr.astype(np.int64)


def accuracy(probs: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """Share of rows whose most probable class is the target class."""
    p = as_probs(probs)
    return float((p.argmax(axis=1) == _targets(targets, p)).mean())


def nll(probs: npt.ArrayLike, targets: npt.ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at ``eps``)."""
    p = as_probs(probs)
    t = _targets(targets, p)
    return float(-np.log(np.clip(p[np.arange(len(p)), t], eps, None)).mean())


def brier_score(probs: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """Mean over rows of ``sum_c (p_c - onehot_c)^2`` (0 best, 2 worst)."""
    p = as_probs(probs)
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
        """The table as a DataFrame, one row per bin."""
        import pandas as pd

        return pd.DataFrame(self.__dict__)


def reliability_table(
    probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15
) -> ReliabilityTable:
    """Per equal-width confidence bin: row count, mean confidence and accuracy."""
    return CalibrationState.of(probs, targets, n_bins).reliability()


def calibration_error(
    probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15, norm: str = "l1"
) -> float:
    """Expected (``norm="l1"``, ECE) or maximum (``norm="max"``, MCE) calibration error over
    equal-width confidence bins."""
    if norm not in ("l1", "max"):
        raise ValueError(f"norm must be 'l1' (ECE) or 'max' (MCE), got {norm!r}")
    return CalibrationState.of(probs, targets, n_bins).compute()["ece" if norm == "l1" else "mce"]


def adaptive_calibration_error(
    probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15
) -> float:
    """ECE over equal-mass bins (each holds ~n/B rows sorted by confidence)."""
    p = as_probs(probs)
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

    @classmethod
    def of(cls, probs: npt.ArrayLike, targets: npt.ArrayLike, n_bins: int = 15) -> CalibrationState:
        """A state holding ``probs`` and their ``targets`` (the batch form)."""
        state = cls(n_bins)
        state.update(probs, targets)
        return state

    def update(self, probs: npt.ArrayLike, targets: npt.ArrayLike) -> None:
        """Add ``(n, C)`` probabilities and their ``(n,)`` target class indices."""
        p = as_probs(probs)
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
        """A state holding the rows of both (from parallel workers, say)."""
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
        """The reliability table of the rows seen so far."""
        edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf, acc = self.conf_sum / self.count, self.acc_sum / self.count
        return ReliabilityTable(edges[:-1], edges[1:], self.count.astype(np.int64), conf, acc)

    def compute(self) -> dict[str, float]:
        """``n``, ``accuracy``, ``nll``, ``brier``, ``ece`` and ``mce`` of the rows seen so far."""
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


Method = Literal["lac", "aps"]


def fit_temperature(logits: npt.ArrayLike, targets: npt.ArrayLike, *, max_iter: int = 200) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on labelled rows.

    Pass it back as ``capture_probs(..., temperature=T)``; logits come from a capture made with
    ``keep_logits=True``.
    """
    import torch

    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(
            f"need logits (n, C) and targets (n,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("logits contain NaN or inf: drop non-finite rows (see .finite) first")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) > 0
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.exp().item())


def _scores(
    probs: npt.NDArray[np.float64], method: Method, u: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]:
    """Non-conformity of every class in every row (lower = more conforming).

    APS: the mass of the classes ranked above, plus the class's own mass (all of it, or a
    uniform share ``u`` per row for randomised APS).
    """
    if method == "lac":
        return 1.0 - probs
    if method == "aps":
        order = np.argsort(-probs, axis=1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
        scores = np.empty_like(probs)
        np.put_along_axis(scores, order, cumulative, axis=1)
        return scores if u is None else scores - (1.0 - u[:, None]) * probs
    raise ValueError(f"method must be 'lac' or 'aps', got {method!r}")


def _uniform(n: int, randomized: bool, seed: int | None) -> npt.NDArray[np.float64] | None:
    return np.random.default_rng(seed).random(n) if randomized else None


def conformal_threshold(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    alpha: float = 0.1,
    method: Method = "lac",
    *,
    randomized: bool = False,
    seed: int | None = None,
) -> float:
    """Split-conformal threshold from a labelled calibration set at miscoverage ``alpha``.

    Sets built with it contain the true class with probability >= 1 - alpha for exchangeable
    data. LAC gives the smallest sets; APS adapts set size to how spread a row is. Plain APS is
    deterministic and conservative (it keeps the class that crosses the threshold);
    ``randomized=True`` gives coverage close to exactly 1 - alpha and smaller sets. Use the same
    ``method`` and ``randomized`` for [`prediction_sets`][prediction_sets].
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = len(p)
    if n == 0 or t.shape != (n,):
        raise ValueError(
            f"need a non-empty calibration set with one target per row, got {p.shape}, {t.shape}"
        )
    level = np.ceil((n + 1) * (1 - alpha)) / n
    if level > 1:
        raise ValueError(
            f"{n} calibration rows are too few for alpha={alpha}; "
            f"need >= {int(np.ceil(1 / alpha)) - 1}"
        )
    true_scores = _scores(p, method, _uniform(n, randomized, seed))[np.arange(n), t]
    return float(np.quantile(true_scores, level, method="higher"))


def prediction_sets(
    probs: npt.ArrayLike,
    threshold: float,
    method: Method = "lac",
    *,
    randomized: bool = False,
    seed: int | None = None,
) -> npt.NDArray[np.bool_]:
    """``(n, C)`` membership mask of each row's prediction set."""
    p = np.asarray(probs, dtype=np.float64)
    scores = _scores(p, method, _uniform(len(p), randomized, seed))
    if method == "aps" and not randomized:  # keep the class that crosses the threshold
        return (scores - p) < threshold
    return scores <= threshold


def confusion_matrix(probs: npt.ArrayLike, targets: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """``(C, C)`` counts: row = true class, column = predicted (most probable) class.

    Examples:
        >>> confusion_matrix(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), [0, 1, 1]).tolist()
        [[1, 0], [1, 1]]
    """
    p = as_probs(probs)
    out = np.zeros((p.shape[1], p.shape[1]), dtype=np.int64)
    np.add.at(out, (_targets(targets, p), p.argmax(axis=1)), 1)
    return out


@dataclass(frozen=True)
class RiskCoverage:
    """Accepting the rows whose confidence is at least ``threshold[i]`` keeps ``coverage[i]`` of
    them at ``accuracy[i]``; one point per distinct confidence, most confident first."""

    threshold: Array
    coverage: Array
    accuracy: Array


def risk_coverage(probs: npt.ArrayLike, targets: npt.ArrayLike) -> RiskCoverage:
    """Accuracy against the share of rows accepted as the confidence threshold moves down.

    Examples:
        >>> rc = risk_coverage(np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]]), [0, 1, 1])
        >>> rc.coverage.round(2).tolist(), rc.accuracy.round(2).tolist()
        ([0.33, 0.67, 1.0], [1.0, 0.5, 0.67])
    """
    p = as_probs(probs)
    correct = p.argmax(axis=1) == _targets(targets, p)
    conf = max_prob(p)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    last_of_tie = np.r_[conf[1:] != conf[:-1], True] if len(conf) else np.zeros(0, bool)
    accepted = np.arange(1, len(conf) + 1)
    return RiskCoverage(
        conf[last_of_tie],
        (accepted / max(len(conf), 1))[last_of_tie],
        (np.cumsum(correct) / accepted)[last_of_tie],
    )
