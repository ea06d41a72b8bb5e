"""Drift between two runs of one classifier: [`compare`][compare] (also ``probhook.compare``).

Class shares (chi-square test of homogeneity), the top probability and the normalised entropy
(Kolmogorov-Smirnov statistic and p-value, PSI on the reference's deciles), the estimated accuracy
of both runs with intervals, and all of it per predicted class. Runs are captures, heads, loaded
files, or files and folders read in chunks ([`probhook.scan`][probhook.scan]).

Examples:
    >>> import numpy as np, probhook
    >>> rng = np.random.default_rng(0)
    >>> def run(scale, n=3000):
    ...     z = rng.normal(size=(n, 3)) * scale
    ...     return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    >>> drift = probhook.compare(run(2.0), run(1.0))
    >>> bool(drift.confidence.ks.pvalue < 1e-6)  # the current run is less sure
    True
    >>> drift.confidence.current_mean < drift.confidence.reference_mean
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probhook.estimate import AccuracyEstimate, ClassEstimate, calibrator_for
from probhook.run_stats import EXACT_ROWS, RunStats, run_stats
from probhook.scan import open_rows, same_labels
from probhook.two_sample import (
    ChiSquareResult,
    KSResult,
    PSIResult,
    chi_square,
    ks_binned,
    ks_exact,
    psi,
)

MIN_ROWS = 2
"""Rows a class needs in both runs before its scores are compared."""


@dataclass(frozen=True)
class ScoreShift:
    """One score (``"confidence"``: top probability; ``"entropy"``: normalised entropy) in both
    runs: the means, KS and PSI."""

    score: str
    reference_mean: float
    current_mean: float
    ks: KSResult
    psi: PSIResult


@dataclass(frozen=True)
class ClassShift:
    """One predicted class in both runs: counts and shares, the estimated precision (the
    accuracy of the rows predicted as it) and its confidence shift (None when a run has fewer
    than [`MIN_ROWS`][MIN_ROWS] such rows)."""

    label: str
    reference_count: int
    current_count: int
    reference_share: float
    current_share: float
    reference: ClassEstimate
    current: ClassEstimate
    confidence: ScoreShift | None


@dataclass(frozen=True)
class Drift:
    """The result of [`compare`][compare]."""

    labels: tuple[str, ...]
    reference: AccuracyEstimate
    current: AccuracyEstimate
    class_shares: ChiSquareResult
    confidence: ScoreShift
    entropy: ScoreShift
    per_class: tuple[ClassShift, ...]
    reference_stats: RunStats
    current_stats: RunStats

    def to_pandas(self) -> Any:
        """One row per measure and class (``"(all)"`` for the whole run): the reference and
        current values (with intervals for estimates), and the test's statistic and p-value."""
        import pandas as pd

        return pd.DataFrame(_records(self))

    def plot(self) -> Any:
        """A matplotlib figure: class shares, and the top probability and entropy histograms of
        both runs (``probhook[notebook]``)."""
        from probhook.drift_plot import plot_drift

        return plot_drift(self)

    def __str__(self) -> str:
        ks, c = self.confidence.ks, self.class_shares
        return "\n".join(
            [
                f"reference: {self.reference}",
                f"current:   {self.current}",
                f"class shares: chi-square {c.statistic:.2f} (dof {c.dof}), p = {c.pvalue:.3g}",
                f"top probability: mean {self.confidence.reference_mean:.3f} -> "
                f"{self.confidence.current_mean:.3f}, KS {ks.statistic:.3f} (p = {ks.pvalue:.3g}), "
                f"PSI {self.confidence.psi.psi:.3f}",
                f"entropy: mean {self.entropy.reference_mean:.3f} -> "
                f"{self.entropy.current_mean:.3f}, "
                f"KS {self.entropy.ks.statistic:.3f} (p = {self.entropy.ks.pvalue:.3g}), "
                f"PSI {self.entropy.psi.psi:.3f}",
            ]
        )


def _records(d: Drift) -> list[dict[str, Any]]:
    nan = float("nan")

    def rec(
        measure: str,
        cls: str,
        ref: float,
        cur: float,
        test: str = "",
        statistic: float = nan,
        pvalue: float = nan,
        ref_ci: tuple[float, float] = (nan, nan),
        cur_ci: tuple[float, float] = (nan, nan),
    ) -> dict[str, Any]:
        return {
            "measure": measure,
            "class": cls,
            "reference": ref,
            "reference_lower": ref_ci[0],
            "reference_upper": ref_ci[1],
            "current": cur,
            "current_lower": cur_ci[0],
            "current_upper": cur_ci[1],
            "test": test,
            "statistic": statistic,
            "p_value": pvalue,
        }

    def shift(s: ScoreShift, cls: str) -> list[dict[str, Any]]:
        return [
            rec(
                f"mean {s.score}",
                cls,
                s.reference_mean,
                s.current_mean,
                "KS",
                s.ks.statistic,
                s.ks.pvalue,
            ),
            rec(f"{s.score} PSI", cls, nan, nan, "PSI", s.psi.psi),
        ]

    r, c, shares = d.reference, d.current, d.class_shares
    out = [
        rec("rows", "(all)", r.n, c.n),
        rec("excluded rows (not finite)", "(all)", r.excluded, c.excluded),
        rec(
            "estimated accuracy",
            "(all)",
            r.accuracy,
            c.accuracy,
            "",
            nan,
            nan,
            (r.lower, r.upper),
            (c.lower, c.upper),
        ),
        rec("class share", "(all)", nan, nan, "chi-square", shares.statistic, shares.pvalue),
        *shift(d.confidence, "(all)"),
        *shift(d.entropy, "(all)"),
    ]
    for k in d.per_class:
        a, b = k.reference, k.current
        out.append(rec("class share", k.label, k.reference_share, k.current_share))
        out.append(
            rec(
                "estimated precision",
                k.label,
                a.precision,
                b.precision,
                "",
                nan,
                nan,
                (a.precision_lower, a.precision_upper),
                (b.precision_lower, b.precision_upper),
            )
        )
        if k.confidence is not None:
            out += shift(k.confidence, k.label)
    return out


def _shift(score: str, ref: RunStats, cur: RunStats, predicted: int | None = None) -> ScoreShift:
    if ref.exact and cur.exact:
        ks = ks_exact(ref.values(score, predicted), cur.values(score, predicted))
    else:
        ks = ks_binned(ref.histogram(score, predicted), cur.histogram(score, predicted))
    return ScoreShift(
        score,
        ref.mean(score, predicted),
        cur.mean(score, predicted),
        ks,
        psi(ref.histogram(score, predicted), cur.histogram(score, predicted)),
    )


def compare_stats(ref: RunStats, cur: RunStats, level: float = 0.95) -> Drift:
    """The drift between two runs' summaries (what [`compare`][compare] computes after reading)."""
    for name, stats in (("reference", ref), ("current", cur)):
        if stats.n == 0:
            why = (
                f" ({stats.excluded} rows with NaN or inf probabilities excluded)"
                if stats.excluded
                else ""
            )
            raise ValueError(f"the {name} run has no rows to compare{why}")
    a, b = ref.estimate(level), cur.estimate(level)
    rc, cc = ref.class_counts, cur.class_counts
    per_class = []
    for k, label in enumerate(ref.labels):
        both = min(rc[k], cc[k]) >= MIN_ROWS
        per_class.append(
            ClassShift(
                label,
                int(rc[k]),
                int(cc[k]),
                float(rc[k] / rc.sum()),
                float(cc[k] / cc.sum()),
                a.per_class[k],
                b.per_class[k],
                _shift("confidence", ref, cur, k) if both else None,
            )
        )
    return Drift(
        ref.labels,
        a,
        b,
        chi_square(rc, cc),
        _shift("confidence", ref, cur),
        _shift("entropy", ref, cur),
        tuple(per_class),
        ref,
        cur,
    )


def compare(
    reference: Any,
    current: Any,
    *,
    calibrate_on: Any = None,
    method: str = "temperature",
    level: float = 0.95,
    exact_rows: int = EXACT_ROWS,
) -> Drift:
    """Did the documents drift between ``reference`` and ``current``?

    Each is a capture with one head, a head, a loaded file, a file or folder of Parquet / Arrow
    files (read in chunks), or ``(n, C)`` probabilities. Both must have the same labels.
    ``calibrate_on`` (a fitted map, or ``(labelled rows, targets)``) calibrates both accuracy
    estimates. KS is exact while a run has at most ``exact_rows`` rows, else bounded from the
    grid (``Drift.confidence.ks.exact``). Needs ``probhook[decisions]`` (scipy).
    """
    ref_rows, cur_rows = open_rows(reference), open_rows(current)
    same_labels(ref_rows.labels, cur_rows.labels)
    calibrator = calibrator_for(calibrate_on, cur_rows.labels, method)
    ref = run_stats(ref_rows, exact_rows=exact_rows, calibrator=calibrator)
    cur = run_stats(cur_rows, exact_rows=exact_rows, calibrator=calibrator)
    return compare_stats(ref, cur, level)
