"""Matplotlib plots of captured distributions; each returns the ``Axes`` it drew on.

Also reachable as ``cap.plot.<name>(...)`` on a capture, a head or a loaded file. A source is a
capture, a head, a loaded file or a plain ``(n, C)`` probability array. Plots against true labels
(reliability, confusion matrix, risk-coverage) live in
[`probhook.truth_plots`][probhook.truth_plots] and are re-exported here.

Examples:
    >>> import numpy as np
    >>> from probhook import plots
    >>> ax = plots.confidence_histogram(np.array([[0.9, 0.1], [0.6, 0.4]]), bins=10)
    >>> len(ax.patches)
    10
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook._plotting import (
    THRESHOLD_COLOR,
    legend_outside,
    new_axes,
    note_if_empty,
    probs_labels,
)
from probhook.truth_plots import confusion_matrix, reliability_diagram, risk_coverage

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from probhook.block import RowSource
    from probhook.distribution import Distribution

__all__ = [
    "Plotter",
    "class_means",
    "confidence_histogram",
    "confusion_matrix",
    "distribution_bar",
    "reliability_diagram",
    "risk_coverage",
    "uncertainty_histogram",
]


def _histogram(
    ax: Axes, values: npt.NDArray[np.float64], bins: int, color: str, threshold: float | None,
    flagged_below: bool,
) -> None:  # fmt: skip
    # a detected element's margin is negative when its query prefers another class
    low = -1.0 if len(values) and float(np.nanmin(values)) < 0 else 0.0
    ax.hist(values, bins=bins, range=(low, 1.0), color=color, edgecolor="white", label="rows")
    if threshold is not None:
        n = int((values < threshold).sum() if flagged_below else (values > threshold).sum())
        side = "below" if flagged_below else "above"
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5,
                   label=f"threshold {threshold:g}\n{n} rows {side}")  # fmt: skip
        legend_outside(ax)
    ax.set_xlim(low, 1.0)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # row counts are whole numbers


def _measure(source: Any, name: str, default: Any) -> npt.NDArray[np.float64]:
    """A per-row measure: the source's own where its rows define it (detected elements are
    measured at their own class, see ``probhook.elements``), else ``default()``."""
    measures = getattr(source, "measures", None)
    if measures is None:
        return np.asarray(default(), np.float64)
    m = measures()
    if name == "entropy":
        if m.sigmoid.any():
            from probhook.elements import SIGMOID_ENTROPY

            raise ValueError(SIGMOID_ENTROPY)
        return np.asarray(m.normalized_entropy())
    return np.asarray(getattr(m, name), np.float64)


def confidence_histogram(
    source: Any, *, bins: int = 20, threshold: float | None = None, ax: Axes | None = None
) -> Axes:
    """Histogram of the top probability of each row; ``threshold`` (a ``min_confidence``) draws
    a line and counts the rows below it."""
    probs, _ = probs_labels(source)
    ax = new_axes(ax)
    values = _measure(source, "confidence", lambda: metrics.max_prob(probs))
    _histogram(ax, values, bins, "#4c78a8", threshold, flagged_below=True)
    ax.set(title=f"Confidence of {len(probs)} predictions", xlabel="top probability", ylabel="rows")
    note_if_empty(ax, len(probs))
    return ax


def uncertainty_histogram(
    source: Any,
    *,
    measure: str = "margin",
    bins: int = 20,
    threshold: float | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Histogram of the margin (top-1 minus top-2) or the normalised entropy of each row;
    ``threshold`` (a ``min_margin`` or ``max_entropy``) draws a line and counts the flagged rows."""
    probs, _ = probs_labels(source)
    if measure == "margin":
        values = _measure(source, "margin", lambda: metrics.margin(probs))
        xlabel = "margin (top-1 minus top-2 probability)"
    elif measure == "entropy":
        values = _measure(source, "entropy", lambda: metrics.entropy(probs, normalized=True))
        xlabel = "entropy / log C"
    else:
        raise ValueError(f"measure must be 'margin' or 'entropy', got {measure!r}")
    ax = new_axes(ax)
    _histogram(ax, values, bins, "#f58518", threshold, flagged_below=measure == "margin")
    title = f"{measure.capitalize()} of {len(probs)} predictions"
    ax.set(title=title, xlabel=xlabel, ylabel="rows")
    note_if_empty(ax, len(probs))
    return ax


def class_means(source: Any, *, ax: Axes | None = None) -> Axes:
    """Mean probability of each class over all rows."""
    probs, labels = probs_labels(source)
    ax = new_axes(ax)
    means = probs.mean(axis=0) if len(probs) else np.zeros(len(labels))
    ax.bar(labels, means, color="#54a24b")
    ax.set(
        title=f"Mean probability per class ({len(probs)} rows)",
        xlabel="class",
        ylabel="mean probability",
    )
    ax.tick_params(axis="x", labelrotation=30)
    note_if_empty(ax, len(probs))
    return ax


def distribution_bar(dist: Distribution, *, ax: Axes | None = None) -> Axes:
    """One row's distribution as bars, most probable first, titled with where it came from
    (file and page for a deepdoctection page)."""
    pairs = dist.top_k(len(dist.labels))
    ax = new_axes(ax)
    ax.bar([label for label, _ in pairs], [p for _, p in pairs], color="#4c78a8")
    where = dist.where
    predicted = f"{dist.predicted} ({dist.confidence:.1%})"
    ax.set(title=f"{where}: {predicted}" if where else predicted, xlabel="class",
           ylabel="probability", ylim=(0, 1))  # fmt: skip
    ax.tick_params(axis="x", labelrotation=30)
    return ax


class Plotter:
    """``view.plot``: the plots above bound to one capture, head or loaded file.

    Every method takes the keyword arguments of its function (``bins=``, ``threshold=``,
    ``ax=``, ...) and returns the matplotlib ``Axes``.
    """

    def __init__(self, view: RowSource) -> None:
        self._view = view

    def confidence(self, **kwargs: Any) -> Axes:
        """Histogram of the top probabilities ([`confidence_histogram`][confidence_histogram])."""
        return confidence_histogram(self._view, **kwargs)

    def uncertainty(self, **kwargs: Any) -> Axes:
        """Histogram of margins or entropies ([`uncertainty_histogram`][uncertainty_histogram])."""
        return uncertainty_histogram(self._view, **kwargs)

    def reliability(self, targets: Any, **kwargs: Any) -> Axes:
        """Accuracy per confidence bin with per-bin counts
        ([`reliability_diagram`][reliability_diagram]); ``targets`` are true labels (names or class
        indices) aligned with the rows."""
        return reliability_diagram(self._view, targets, **kwargs)

    def confusion(self, targets: Any, **kwargs: Any) -> Axes:
        """True against predicted class ([`confusion_matrix`][confusion_matrix])."""
        return confusion_matrix(self._view, targets, **kwargs)

    def risk_coverage(self, targets: Any, **kwargs: Any) -> Axes:
        """Accuracy against the share of rows accepted ([`risk_coverage`][risk_coverage])."""
        return risk_coverage(self._view, targets, **kwargs)

    def class_means(self, **kwargs: Any) -> Axes:
        """Mean probability per class ([`class_means`][class_means])."""
        return class_means(self._view, **kwargs)

    def page(self, key: Any, **kwargs: Any) -> Axes:
        """One row's distribution ([`distribution_bar`][distribution_bar]); ``key`` is what ``get``
        takes."""
        dist = self._view.get(key)
        if dist is None:
            raise KeyError(f"no row captured for {key!r}")
        return distribution_bar(dist, **kwargs)
