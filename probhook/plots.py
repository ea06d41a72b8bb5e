"""Matplotlib plots of captured distributions; each returns the ``Axes`` it drew on.

Also reachable as ``cap.plot.<name>(...)`` on a capture, a head or a loaded file.

>>> import matplotlib
>>> matplotlib.use("Agg")
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

from probhook import calibration, metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from probhook.block import RowSource
    from probhook.distribution import Distribution


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=(6, 3.5), layout="constrained")
    return new


def _note_if_empty(ax: Axes, n_rows: int) -> None:
    """An empty result is a plot too: an empty frame that says why it is empty."""
    if n_rows == 0:
        ax.text(0.5, 0.5, "no rows captured", transform=ax.transAxes, ha="center",
                va="center", color="grey")  # fmt: skip


def _probs_labels(source: Any) -> tuple[npt.NDArray[np.float64], list[str]]:
    if hasattr(source, "probs") and hasattr(source, "labels"):
        return np.asarray(source.probs, dtype=np.float64), list(source.labels)
    probs = np.asarray(source, dtype=np.float64)
    return probs, [str(i) for i in range(probs.shape[1] if probs.ndim == 2 else 0)]


def confidence_histogram(source: Any, *, bins: int = 20, ax: Axes | None = None) -> Axes:
    """Histogram of the top probability of each row (a capture, a head or an ``(n, C)`` array)."""
    probs, _ = _probs_labels(source)
    ax = _axes(ax)
    ax.hist(
        metrics.max_prob(probs), bins=bins, range=(0.0, 1.0), color="#4c78a8", edgecolor="white"
    )
    ax.set(title=f"Confidence of {len(probs)} predictions", xlabel="top probability", ylabel="rows")
    _note_if_empty(ax, len(probs))
    return ax


def uncertainty_histogram(
    source: Any, *, measure: str = "margin", bins: int = 20, ax: Axes | None = None
) -> Axes:
    """Histogram of the margin (top-1 minus top-2) or the normalised entropy of each row."""
    probs, _ = _probs_labels(source)
    if measure == "margin":
        values, xlabel = metrics.margin(probs), "margin (top-1 minus top-2 probability)"
    elif measure == "entropy":
        values, xlabel = metrics.entropy(probs, normalized=True), "entropy / log C"
    else:
        raise ValueError(f"measure must be 'margin' or 'entropy', got {measure!r}")
    ax = _axes(ax)
    ax.hist(values, bins=bins, range=(0.0, 1.0), color="#f58518", edgecolor="white")
    ax.set(
        title=f"{measure.capitalize()} of {len(probs)} predictions", xlabel=xlabel, ylabel="rows"
    )
    _note_if_empty(ax, len(probs))
    return ax


def reliability_diagram(
    source: Any, targets: Any, *, n_bins: int = 15, ax: Axes | None = None
) -> Axes:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with ECE.

    ``targets`` are class indices or label names aligned with the rows.
    """
    probs, _labels = _probs_labels(source)
    if hasattr(source, "target_indices"):
        targets = source.target_indices(targets)
    ax = _axes(ax)
    ece = float("nan")
    if len(probs):
        table = calibration.reliability_table(probs, np.asarray(targets), n_bins)
        ece = calibration.calibration_error(probs, np.asarray(targets), n_bins)
        seen = table.count > 0
        ax.bar(table.lower[seen], table.accuracy[seen], width=1.0 / n_bins, align="edge",
               color="#4c78a8", edgecolor="white", label="accuracy")  # fmt: skip
    _note_if_empty(ax, len(probs))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=f"Reliability ({len(probs)} rows, ECE {ece:.3f})")  # fmt: skip
    ax.legend(loc="upper left")
    return ax


def class_means(source: Any, *, ax: Axes | None = None) -> Axes:
    """Mean probability of each class over all rows."""
    probs, labels = _probs_labels(source)
    ax = _axes(ax)
    means = probs.mean(axis=0) if len(probs) else np.zeros(len(labels))
    ax.bar(labels, means, color="#54a24b")
    ax.set(
        title=f"Mean probability per class ({len(probs)} rows)",
        xlabel="class",
        ylabel="mean probability",
    )
    ax.tick_params(axis="x", labelrotation=30)
    _note_if_empty(ax, len(probs))
    return ax


def distribution_bar(dist: Distribution, *, ax: Axes | None = None) -> Axes:
    """One row's distribution as bars, most probable first."""
    pairs = dist.top_k(len(dist.labels))
    ax = _axes(ax)
    ax.bar([label for label, _ in pairs], [p for _, p in pairs], color="#4c78a8")
    title = (
        f"{dist.key}: {dist.predicted} ({dist.confidence:.1%})"
        if dist.key is not None
        else dist.predicted
    )
    ax.set(title=title, xlabel="class", ylabel="probability", ylim=(0, 1))
    ax.tick_params(axis="x", labelrotation=30)
    return ax


class Plotter:
    """``view.plot``: the plots above bound to one capture, head or loaded file."""

    def __init__(self, view: RowSource) -> None:
        self._view = view

    def confidence(self, **kwargs: Any) -> Axes:
        return confidence_histogram(self._view, **kwargs)

    def uncertainty(self, **kwargs: Any) -> Axes:
        return uncertainty_histogram(self._view, **kwargs)

    def reliability(self, targets: Any, **kwargs: Any) -> Axes:
        return reliability_diagram(self._view, targets, **kwargs)

    def class_means(self, **kwargs: Any) -> Axes:
        return class_means(self._view, **kwargs)

    def page(self, key: Any, **kwargs: Any) -> Axes:
        dist = self._view.get(key)
        if dist is None:
            raise KeyError(f"no row captured for {key!r}")
        return distribution_bar(dist, **kwargs)
