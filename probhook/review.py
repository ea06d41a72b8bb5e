"""Which rows a person must check so that the rest are right: a confidence threshold with a
guarantee, from a labelled calibration set (selective classification with guaranteed risk,
Geifman & El-Yaniv 2017; fixed-sequence Learn-then-Test, Angelopoulos et al. 2021).

Rows whose top probability is at least the threshold are accepted automatically, the others go
to review. For each candidate threshold, from high to low, the errors among the calibration rows
it accepts give a Clopper-Pearson upper bound on its error rate at level ``1 - delta``; the
thresholds are tested in that fixed order and the last one whose bound is at most ``max_error``
before the first that fails is kept. Then, for new rows exchangeable with the calibration rows,
**the error rate of the accepted rows is at most max_error with probability at least
1 - delta** (over the draw of the calibration set). Testing in a fixed order needs no
multiple-testing correction, however many thresholds are tried.

The candidates are the calibration rows' distinct top probabilities. Where the sequence starts
is chosen without the labels (so the guarantee holds): the first threshold tested fails if the
rows it accepts are too few (with fewer than ``ceil(ln delta / ln(1 - max_error))`` rows even zero
errors cannot pass) and then nothing is certified, so the sequence starts at the first threshold
that would still pass with one error more than the model's own probabilities expect
([`start_of_sequence`][start_of_sequence]). ``per_class=True`` gives one threshold per predicted
class, each tested at ``delta / C`` so that all hold together.

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 4)) * 3
    >>> probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    >>> targets = (probs.cumsum(axis=1) < rng.random((20000, 1))).sum(axis=1)
    >>> rule = review_threshold(probs, targets, max_error=0.02, delta=0.05)
    >>> print(rule)
    review rows below confidence 0.9521: 23.3% of the 20000 calibration rows accepted with 1.65%
    errors; error <= 0.02 with probability >= 0.95 (bound 0.0199)
    >>> from probhook import metrics
    >>> int(metrics.flag(probs, rule).sum()) == round((1 - rule.coverage) * 20000)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook._extras import require
from probhook.metrics import Threshold, as_probs

NONE = math.inf
"""The threshold when none can be certified: every row goes to review."""


def clopper_pearson_upper(errors: npt.ArrayLike, n: npt.ArrayLike, delta: float) -> Any:
    """One-sided upper confidence bound at level ``1 - delta`` on an error rate, from ``errors``
    in ``n`` rows (1 where ``errors == n``).

    Examples:
        >>> round(float(clopper_pearson_upper(0, 149, 0.05)), 4)
        0.0199
    """
    special = require("scipy.special", "decisions", "the Clopper-Pearson bound")
    k, m = np.asarray(errors, np.float64), np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = special.betaincinv(k + 1, np.maximum(m - k, 1e-300), 1 - delta)
    return np.where(k >= m, 1.0, bound)


def fewest_rows(max_error: float, delta: float) -> int:
    """The fewest accepted rows with which a threshold can pass: zero errors in them bound the
    error rate by ``max_error`` (e.g. 149 for 0.02 and 0.05, 299 for 0.01 and 0.05)."""
    return math.ceil(math.log(delta) / math.log1p(-max_error) - 1e-9)


def start_of_sequence(sorted_conf: Any, last_of_tie: Any, max_error: float, delta: float) -> int:
    """Where the sequence of candidate thresholds starts (an index into ``last_of_tie``), from
    the top probabilities alone: at the first candidate whose expected errors (the sum of
    ``1 - c`` over the rows it accepts, as CBPE counts them) plus one would still pass; if none
    would, at the first that accepts [`fewest_rows`][fewest_rows] rows."""
    accepted = np.asarray(last_of_tie) + 1
    expected = np.cumsum(1.0 - np.asarray(sorted_conf))[last_of_tie]
    would_pass = clopper_pearson_upper(np.ceil(expected) + 1, accepted, delta) <= max_error
    if would_pass.any():
        return int(np.argmax(would_pass))
    return int(np.searchsorted(accepted, fewest_rows(max_error, delta)))


@dataclass(frozen=True)
class Selection:
    """The threshold found for one set of rows: rows accepted and their errors on the
    calibration set, the bound, and how many thresholds were tested."""

    threshold: float
    accepted: int
    errors: int
    bound: float
    n: int
    tested: int


def select(
    confidence: npt.ArrayLike, wrong: npt.ArrayLike, max_error: float, delta: float
) -> Selection:
    """The fixed-sequence test on one set of rows (top probabilities and whether each row's
    prediction is wrong)."""
    conf, bad = np.asarray(confidence, np.float64), np.asarray(wrong, bool)
    order = np.argsort(-conf, kind="stable")
    c, errors = conf[order], np.cumsum(bad[order])
    last_of_tie = np.flatnonzero(np.r_[c[1:] != c[:-1], True]) if len(c) else np.zeros(0, int)
    accepted = last_of_tie + 1
    keep = start_of_sequence(c, last_of_tie, max_error, delta)
    last_of_tie, accepted = last_of_tie[keep:], accepted[keep:]
    k = errors[last_of_tie]
    bounds = clopper_pearson_upper(k, accepted, delta)
    failed = np.flatnonzero(bounds > max_error)
    passed = len(bounds) if not len(failed) else int(failed[0])
    tested = min(passed + 1, len(bounds))
    if passed == 0:
        return Selection(NONE, 0, 0, 1.0, len(c), tested)
    i = passed - 1
    return Selection(
        float(c[last_of_tie[i]]), int(accepted[i]), int(k[i]), float(bounds[i]), len(c), tested
    )


@dataclass(frozen=True)
class ReviewRule:
    """Accept rows whose top probability is at least ``min_confidence`` (one number, or one per
    predicted class); review the rest. Pass it to ``flag(rule)``.

    ``coverage``: the share of calibration rows accepted; ``error``: their error rate;
    ``error_bound``: its Clopper-Pearson upper bound (the largest over classes with
    ``per_class``). ``n``: calibration rows used, ``excluded``: rows left out (not finite);
    ``labels``: the class names in column order; ``classes``: per class, what was found.
    """

    min_confidence: float | dict[str, float]
    max_error: float
    delta: float
    coverage: float
    error: float
    error_bound: float
    n: int
    excluded: int
    labels: tuple[str, ...]
    classes: dict[str, Selection] = field(default_factory=dict)

    def thresholds(self) -> dict[str, Threshold]:
        """The rule as ``flag`` thresholds."""
        return {"min_confidence": self.min_confidence}

    def __str__(self) -> str:
        if isinstance(self.min_confidence, Mapping):
            text = ", ".join(f"{k} {_fmt(v)}" for k, v in self.min_confidence.items())
        else:
            text = _fmt(self.min_confidence)
        return (
            f"review rows below confidence {text}: {self.coverage:.1%} of the {self.n} "
            f"calibration rows accepted with {self.error:.2%} errors; error <= "
            f"{self.max_error:g} with probability >= {1 - self.delta:g} (bound "
            f"{self.error_bound:.4f})"
        )


def _fmt(threshold: float) -> str:
    return "none (review all)" if threshold == NONE else f"{threshold:.4f}"


def review_threshold(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    max_error: float = 0.02,
    delta: float = 0.05,
    *,
    per_class: bool = False,
    labels: Sequence[str] | None = None,
    predicted: npt.ArrayLike | None = None,
) -> ReviewRule:
    """The lowest confidence threshold whose accepted rows have an error rate of at most
    ``max_error`` with probability at least ``1 - delta`` (see the module), from labelled
    calibration rows: ``probs`` ``(n, C)`` and target class indices. Rows that are not finite
    are left out (``excluded``): ``flag`` sends them to review anyway. ``predicted``: each
    row's predicted column (an element's own class), else its argmax."""
    if not 0 < max_error < 1 or not 0 < delta < 1:
        raise ValueError(f"max_error and delta must lie in (0, 1), got {max_error} and {delta}")
    p = as_probs(probs)
    t = np.asarray(targets)
    if t.shape != (len(p),) or t.dtype.kind not in "iu":
        raise ValueError(
            f"targets must be {len(p)} class indices, one per row; got {t.dtype} of shape {t.shape}"
        )
    names = [str(x) for x in labels] if labels is not None else [str(i) for i in range(p.shape[1])]
    finite = np.isfinite(p).all(axis=1)
    excluded = int((~finite).sum())
    at = None if predicted is None else np.asarray(predicted)
    if at is not None and (at.shape != (len(p),) or at.dtype.kind not in "iu"):
        raise ValueError(f"predicted must be {len(p)} column indices, one per row; got "
                         f"{at.dtype} of shape {at.shape}")  # fmt: skip
    p, t = p[finite], t[finite]
    if not len(p):
        raise ValueError(f"no calibration rows to set a threshold on ({excluded} not finite)")
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"targets must lie in 0..{p.shape[1] - 1}")
    predicted = p.argmax(axis=1) if at is None else at[finite]
    conf, wrong = p[np.arange(len(p)), predicted], predicted != t
    if not per_class:
        s = select(conf, wrong, max_error, delta)
        error = s.errors / s.accepted if s.accepted else 0.0
        return ReviewRule(
            s.threshold,
            max_error,
            delta,
            s.accepted / len(p),
            error,
            s.bound,
            len(p),
            excluded,
            tuple(names),
        )
    share = delta / p.shape[1]
    classes = {
        name: select(conf[predicted == k], wrong[predicted == k], max_error, share)
        for k, name in enumerate(names)
    }
    accepted = sum(s.accepted for s in classes.values())
    errors = sum(s.errors for s in classes.values())
    bound = max((s.bound for s in classes.values() if s.accepted), default=1.0)
    return ReviewRule(
        {n: s.threshold for n, s in classes.items()},
        max_error,
        delta,
        accepted / len(p),
        errors / accepted if accepted else 0.0,
        bound,
        len(p),
        excluded,
        tuple(names),
        classes,
    )
