"""The matplotlib picture of a [`Drift`][probhook.drift.Drift]: class shares, and the histograms of
the top probability and the normalised entropy of both runs (``probhook[notebook]``).

Examples:
    >>> import numpy as np, probhook
    >>> rng = np.random.default_rng(0)
    >>> p = rng.dirichlet([1, 1, 1], size=(2, 500))
    >>> fig = probhook.compare(p[0], p[1]).plot()
    >>> [ax.get_title() for ax in fig.axes]
    ['class shares', 'top probability', 'normalised entropy']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from probhook._extras import require
from probhook.svg import REFERENCE_COLOR, RUN_COLOR
from probhook.two_sample import FINE_BINS

if TYPE_CHECKING:
    from probhook.drift import Drift

BINS = 32
"""Bars of each histogram (groups of grid bins)."""


def plot_drift(drift: Drift) -> Any:
    """Three panels side by side; returns the matplotlib ``Figure``."""
    require("matplotlib", "notebook", "Drift.plot()")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.6), layout="constrained")
    x = np.arange(len(drift.labels))
    ref = [k.reference_share for k in drift.per_class]
    cur = [k.current_share for k in drift.per_class]
    axes[0].bar(x - 0.2, ref, 0.4, color=REFERENCE_COLOR, label="reference")
    axes[0].bar(x + 0.2, cur, 0.4, color=RUN_COLOR, label="current")
    axes[0].set_xticks(x, drift.labels, rotation=30, ha="right")
    axes[0].set_title("class shares")
    p = drift.class_shares.pvalue
    axes[0].set_xlabel(f"chi-square p = {p:.3g}")
    axes[0].legend(frameon=False)
    for ax, score, title in (
        (axes[1], "confidence", "top probability"),
        (axes[2], "entropy", "normalised entropy"),
    ):
        shift = drift.confidence if score == "confidence" else drift.entropy
        edges = np.linspace(0.0, 1.0, BINS + 1)
        for stats, colour, name in (
            (drift.reference_stats, REFERENCE_COLOR, "reference"),
            (drift.current_stats, RUN_COLOR, "current"),
        ):
            counts = stats.histogram(score).reshape(BINS, FINE_BINS // BINS).sum(axis=1)
            ax.stairs(counts / max(counts.sum(), 1), edges, color=colour, label=name, linewidth=2)
        ax.set_title(title)
        ax.set_xlabel(
            f"KS {shift.ks.statistic:.3f} (p = {shift.ks.pvalue:.3g}), PSI {shift.psi.psi:.3f}"
        )
        ax.set_ylabel("share of rows")
    return fig
