"""Two-sample statistics for drift between runs: Kolmogorov-Smirnov on scores (exact on the values,
or bounded from fine histograms), the chi-square test of homogeneity on class counts, and the
population stability index (PSI). P-values come from ``scipy.stats`` (``probhook[decisions]``).

Scores live in ``[0, 1]`` (top probability, normalised entropy) and are counted on a fixed grid of
[`FINE_BINS`][FINE_BINS] equal bins ``[k/B, (k+1)/B)`` (the last closed at 1.0): exact for PSI
(its bins are unions of grid bins), and for KS when the values themselves are not kept.

Examples:
    >>> import numpy as np
    >>> x, y = np.array([0.2, 0.5, 0.9]), np.array([0.3, 0.6, 0.95, 0.99])
    >>> r = ks_exact(x, y)
    >>> round(r.statistic, 3), r.exact
    (0.5, True)
    >>> hx, hy = fine_histogram(x), fine_histogram(y)
    >>> rb = ks_binned(hx, hy)
    >>> rb.statistic <= r.statistic <= rb.statistic_upper
    True
    >>> chi_square(np.array([50, 50]), np.array([30, 70])).dof
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook._extras import require

FINE_BINS = 1 << 14
"""Bins of the fixed score grid (width 1/16384, about 6e-5)."""
SCIPY_EXACT_N = 10_000
"""Up to this many values per sample scipy's ``ks_2samp`` computes the exact p-value; above it,
its asymptotic one (both reproduced here: ``method="auto"``)."""
PSI_BINS = 10
"""PSI bins: the reference's deciles (on the fine grid)."""
PSI_EPSILON = 1e-4
"""An empty PSI bin counts as this share (else its log is infinite)."""

IntArray = npt.NDArray[np.int64]


def _scipy_stats(feature: str) -> Any:
    return require("scipy.stats", "decisions", feature)


def fine_index(values: npt.ArrayLike) -> IntArray:
    """The grid bin of each score (scores outside ``[0, 1]`` go to the end bins)."""
    v = np.asarray(values, dtype=np.float64)
    return np.clip((v * FINE_BINS).astype(np.int64), 0, FINE_BINS - 1)


def fine_histogram(values: npt.ArrayLike) -> IntArray:
    """Counts of the scores on the fixed grid."""
    return np.bincount(fine_index(values), minlength=FINE_BINS).astype(np.int64)


@dataclass(frozen=True)
class KSResult:
    """The two-sided KS statistic (largest gap between the two empirical CDFs) and its p-value.

    ``exact``: computed on the values, as ``scipy.stats.ks_2samp(x, y)`` computes it (equal to
    it). Otherwise on the grid: ``statistic`` is the KS statistic of the scores rounded down to
    the grid (a lower bound of the true one), ``statistic_upper`` an upper bound (inside a
    bin each CDF lies between its values at the bin's edges), and ``pvalue_lower``
    the p-value at that bound.
    """

    statistic: float
    pvalue: float
    n_reference: int
    n_current: int
    exact: bool
    statistic_upper: float
    pvalue_lower: float


def ks_pvalue(statistic: float, n1: int, n2: int) -> float:
    """The two-sided p-value of ``statistic`` for samples of ``n1`` and ``n2`` values, by
    scipy's asymptotic rule (``kstwo`` at ``round(m n / (m + n))``), used above
    [`SCIPY_EXACT_N`][SCIPY_EXACT_N]."""
    stats = _scipy_stats("the Kolmogorov-Smirnov p-value")
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(statistic, np.round(en)), 0, 1))


def ks_exact(x: npt.ArrayLike, y: npt.ArrayLike, *, block: int = 1 << 20) -> KSResult:
    """KS on the values: the statistic and p-value of ``scipy.stats.ks_2samp(x, y)``, with the
    statistic computed block by block (scipy holds several float64 copies of both samples)."""
    a, b = np.sort(np.asarray(x)), np.sort(np.asarray(y))
    n1, n2 = len(a), len(b)
    if min(n1, n2) == 0:
        raise ValueError(f"KS needs values in both samples, got {n1} and {n2}")
    if max(n1, n2) <= SCIPY_EXACT_N:
        r = _scipy_stats("the Kolmogorov-Smirnov test").ks_2samp(a, b)
        d, p = float(r.statistic), float(r.pvalue)
        return KSResult(d, p, n1, n2, True, d, p)
    # F1 - F2 at every value of both samples, as scipy computes it (searchsorted(., 'right') / n);
    # equal values share one value of both CDFs, so only the last of each run of ties is read,
    # and there a sample's own CDF is its position: one binary search per value, not two
    high, low = -np.inf, np.inf
    for own, other, n_own, n_other, sign in ((a, b, n1, n2, 1.0), (b, a, n2, n1, -1.0)):
        for start in range(0, len(own), block):
            at = own[start : start + block + 1]
            last = np.flatnonzero(at[1:] != at[:-1]) if len(at) > block else None
            if last is None:  # the final block: its last value ends a run too
                last = np.r_[np.flatnonzero(at[1:] != at[:-1]), len(at) - 1]
            mine = (start + last + 1) / n_own
            theirs = np.searchsorted(other, at[last], side="right") / n_other
            diff = (mine - theirs) if sign > 0 else (theirs - mine)
            if len(diff):
                high, low = max(high, float(diff.max())), min(low, float(diff.min()))
    down = float(np.clip(-low, 0, 1))
    d = down if down > high else high  # scipy's tie rule (the value is the same)
    p = ks_pvalue(d, n1, n2)
    return KSResult(d, p, n1, n2, True, d, p)


def ks_binned(hx: npt.ArrayLike, hy: npt.ArrayLike) -> KSResult:
    """KS from two grid histograms: bounds on the statistic (see [`KSResult`][KSResult])."""
    cx, cy = np.asarray(hx, dtype=np.int64), np.asarray(hy, dtype=np.int64)
    n1, n2 = int(cx.sum()), int(cy.sum())
    if min(n1, n2) == 0:
        raise ValueError(f"KS needs values in both samples, got {n1} and {n2}")
    fx, fy = np.cumsum(cx) / n1, np.cumsum(cy) / n2
    lower = float(np.abs(fx - fy).max())
    # inside bin b each CDF lies between its values at the bin's two edges, so the gap is at
    # most F1(right) - F2(left) or F2(right) - F1(left), computed as the exact values are
    fx0, fy0 = np.r_[0.0, fx[:-1]], np.r_[0.0, fy[:-1]]
    upper = max(lower, float(np.maximum(fx - fy0, fy - fx0).max()))
    return KSResult(lower, ks_pvalue(lower, n1, n2), n1, n2, False, upper, ks_pvalue(upper, n1, n2))


@dataclass(frozen=True)
class ChiSquareResult:
    """Chi-square test that two runs share one class distribution (homogeneity, on the ``2 x k``
    table of predicted-class counts; classes neither run predicts are left out: ``classes``)."""

    statistic: float
    pvalue: float
    dof: int
    classes: tuple[int, ...]


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> ChiSquareResult:
    """``scipy.stats.chi2_contingency`` of the counts per class of both runs (scipy's defaults:
    Yates' continuity correction when there are only two classes); fewer than two classes
    predicted: no shift to test (statistic 0, p-value 1)."""
    table = np.vstack([np.asarray(reference), np.asarray(current)]).astype(np.int64)
    if table.shape[0] != 2 or table[0].sum() == 0 or table[1].sum() == 0:
        raise ValueError(f"chi-square needs counts of both runs, got {table.sum(axis=1).tolist()}")
    used = np.flatnonzero(table.sum(axis=0) > 0)
    if len(used) < 2:
        return ChiSquareResult(0.0, 1.0, 0, tuple(int(u) for u in used))
    r = _scipy_stats("the chi-square test").chi2_contingency(table[:, used])
    return ChiSquareResult(
        float(r.statistic), float(r.pvalue), int(r.dof), tuple(int(u) for u in used)
    )


@dataclass(frozen=True)
class PSIResult:
    """``psi = sum (a - e) ln(a / e)`` over bins, ``e`` the reference's share of a bin and ``a``
    the current's (an empty bin counts as [`PSI_EPSILON`][PSI_EPSILON]). ``edges``: the bins'
    inner edges as scores."""

    psi: float
    edges: tuple[float, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]


def psi_edges(reference: npt.ArrayLike, n_bins: int = PSI_BINS) -> IntArray:
    """Inner PSI bin edges (grid indices): where the reference's cumulative share first reaches
    each of ``1/n_bins .. (n_bins-1)/n_bins``, repeated edges merged."""
    h = np.asarray(reference, dtype=np.int64)
    cum = np.cumsum(h) / max(int(h.sum()), 1)
    cuts = np.searchsorted(cum, np.arange(1, n_bins) / n_bins - 1e-12) + 1
    return np.unique(cuts[(cuts > 0) & (cuts < len(h))])


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, n_bins: int = PSI_BINS) -> PSIResult:
    """PSI of two grid histograms on the reference's ``n_bins`` quantile bins."""
    e_hist, a_hist = np.asarray(reference, np.int64), np.asarray(current, np.int64)
    if e_hist.sum() == 0 or a_hist.sum() == 0:
        raise ValueError("PSI needs rows in both runs")
    edges = psi_edges(e_hist, n_bins)
    starts = np.r_[0, edges]
    e = np.add.reduceat(e_hist, starts) / e_hist.sum()
    a = np.add.reduceat(a_hist, starts) / a_hist.sum()
    e_, a_ = np.where(e == 0, PSI_EPSILON, e), np.where(a == 0, PSI_EPSILON, a)
    value = float(((a_ - e_) * np.log(a_ / e_)).sum())
    return PSIResult(
        value, tuple((edges / len(e_hist)).tolist()), tuple(e.tolist()), tuple(a.tolist())
    )
