"""Per-row uncertainty over ``(n, C)`` probability arrays, vectorised: confidence, margin,
entropy, top-k and the review rule. Scores against true labels live in
[`probhook.calibration`][probhook.calibration].

Examples:
    >>> import numpy as np
    >>> from probhook import metrics
    >>> p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    >>> metrics.max_prob(p).tolist(), np.round(metrics.margin(p), 2).tolist()
    ([0.7, 0.4], [0.5, 0.05])
    >>> metrics.flag(p, min_confidence=0.5).tolist()
    [False, True]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def as_probs(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``probs`` as a float64 ``(n, C)`` array, or a clear error about its shape."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, n_classes), got {arr.shape}")
    return arr


def max_prob(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The top probability of each row."""
    p = as_probs(probs)
    return p.max(axis=1) if p.shape[1] else np.zeros(len(p))


def margin(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Top-1 minus top-2 probability (1.0 for a single class)."""
    p = as_probs(probs)
    if p.shape[1] < 2:
        return np.ones(len(p))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(probs: npt.ArrayLike, *, normalized: bool = False) -> npt.NDArray[np.float64]:
    """Shannon entropy in nats; ``normalized`` divides by ``log C`` (0 = certain, 1 = uniform)."""
    p = as_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    if normalized:
        return h / np.log(p.shape[1]) if p.shape[1] > 1 else np.zeros(len(p))
    return np.asarray(h, dtype=np.float64)


def top_k(
    probs: npt.ArrayLike, k: int = 3
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Indices and probabilities of the ``k`` most probable classes per row, best first."""
    p = as_probs(probs)
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(p, idx, axis=1)


Threshold: TypeAlias = "float | Mapping[str, float] | None"
"""A review threshold: one number for every row, or one per predicted label."""


class Rule(Protocol):
    """A review rule: its thresholds by name (``min_confidence``, ``min_margin``,
    ``max_entropy``)."""

    def thresholds(self) -> dict[str, Threshold]:
        """The thresholds, as ``flag`` takes them."""


def with_rule(
    rule: Rule | None, labels: Sequence[str] | None, **given: Threshold
) -> tuple[dict[str, Threshold], Sequence[str] | None]:
    """The thresholds ``given`` plus those of ``rule`` (one given twice is an error), and the
    labels: ``labels``, else the rule's."""
    if rule is None:
        return given, labels
    for name, value in rule.thresholds().items():
        if name not in given or given[name] is not None:
            raise ValueError(f"{name} is given twice: by the rule and as an argument")
        given[name] = value
    return given, labels if labels is not None else getattr(rule, "labels", None)


def flag(
    probs: npt.ArrayLike,
    rule: Rule | None = None,
    *,
    min_confidence: Threshold = None,
    min_margin: Threshold = None,
    max_entropy: Threshold = None,
    labels: Sequence[str] | None = None,
) -> npt.NDArray[np.bool_]:
    """Rows to send to a person: below ``min_confidence`` or ``min_margin``, or above
    ``max_entropy`` (normalised entropy, 0..1). Non-finite rows are always flagged.

    A threshold given as a dict applies per predicted label (``labels`` names the columns);
    a label the dict leaves out is not checked by that threshold. ``rule``: a rule with
    thresholds, such as [`review_threshold`][probhook.review.review_threshold]'s, applied with
    the thresholds given here (one threshold given twice is an error); its ``labels``, if it
    has them, name the columns when ``labels`` is not given.

    Examples:
        >>> p = np.array([[0.85, 0.15], [0.85, 0.15], [0.3, 0.7]])
        >>> flag(p, min_confidence={"invoice": 0.9, "letter": 0.6},
        ...      labels=["invoice", "letter"]).tolist()
        [True, True, False]
    """
    p = as_probs(probs)
    thresholds, labels = with_rule(rule, labels, min_confidence=min_confidence,
                                   min_margin=min_margin, max_entropy=max_entropy)  # fmt: skip
    predicted = np.argmax(np.nan_to_num(p, nan=-1.0), axis=1) if len(p) else np.zeros(0, int)
    return flag_measures(
        np.asarray(np.isfinite(p).all(axis=1), bool),
        predicted,
        p.shape[1],
        confidence=lambda: max_prob(p),
        margin=lambda: margin(p),
        entropy=lambda: entropy(p, normalized=True),
        labels=labels,
        **thresholds,
    )


def flag_measures(
    finite: Array,
    predicted: Array,
    n_classes: int,
    *,
    confidence: Callable[[], Array],
    margin: Callable[[], Array],
    entropy: Callable[[], Array],
    min_confidence: Threshold = None,
    min_margin: Threshold = None,
    max_entropy: Threshold = None,
    labels: Sequence[str] | None = None,
) -> npt.NDArray[np.bool_]:
    """[`flag`][flag] over measures computed elsewhere (each asked for only when its threshold
    is given): rows whose prediction is not their most probable column (detected elements)
    use it. Per-label thresholds apply by ``predicted`` column."""
    out = ~np.asarray(finite, bool)
    checks = ((min_confidence, confidence, np.less, "min_confidence"),
              (min_margin, margin, np.less, "min_margin"),
              (max_entropy, entropy, np.greater, "max_entropy"))  # fmt: skip
    for threshold, measure, beyond, name in checks:
        if threshold is not None:
            limit = _per_row(name, threshold, predicted, n_classes, labels)
            out |= beyond(measure(), limit)
    return np.asarray(out, dtype=bool)


def _per_row(
    name: str,
    threshold: float | Mapping[str, float],
    predicted: Array,
    n_classes: int,
    labels: Sequence[str] | None,
) -> float | npt.NDArray[np.float64]:
    """A scalar threshold as given; a per-label one as each row's threshold (NaN: none)."""
    if not isinstance(threshold, Mapping):
        return float(threshold)
    if labels is None or len(labels) != n_classes:
        raise ValueError(
            f"{name} per class ({dict(threshold)}) needs labels=, the {n_classes} class names "
            f"in column order; got {None if labels is None else list(labels)}"
        )
    unknown = sorted(set(threshold) - set(labels))
    if unknown:
        raise ValueError(f"{name} names {unknown}, which are not among the labels {list(labels)}")
    by_column = np.array([threshold.get(label, np.nan) for label in labels], dtype=np.float64)
    return by_column[np.asarray(predicted, np.int64)] if len(predicted) else by_column[:0]
