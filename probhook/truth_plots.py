"""Plots against true labels: reliability diagram, confusion matrix, risk-coverage curve.

``targets`` are true labels aligned with the rows: label names (with a capture, a head or a
loaded file) or class indices. Each function returns the ``Axes`` it drew on; all are
re-exported by [`probhook.plots`][probhook.plots] and bound on ``cap.plot``.

Examples:
    >>> import numpy as np
    >>> from probhook import truth_plots
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    >>> ax = truth_plots.confusion_matrix(probs, [0, 1, 1])
    >>> [t.get_text() for t in ax.texts]
    ['1', '0', '1', '1']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import calibration
from probhook._plotting import (
    THRESHOLD_COLOR,
    legend_outside,
    new_axes,
    note_if_empty,
    probs_labels,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _indices(source: Any, targets: Any) -> npt.NDArray[np.int64]:
    if hasattr(source, "target_indices"):
        return np.asarray(source.target_indices(targets), dtype=np.int64)
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            "targets of a plain probability array must be class indices; pass a capture or a "
            "head to use label names"
        )
    return arr.astype(np.int64)


def reliability_diagram(
    source: Any, targets: Any, *, n_bins: int = 15, ax: Axes | None = None
) -> Axes:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with each
    bin's row count above its bar and the ECE in the title."""
    probs, _ = probs_labels(source)
    t = _indices(source, targets)
    table = calibration.reliability_table(probs, t, n_bins)
    ece = calibration.calibration_error(probs, t, n_bins) if len(probs) else float("nan")
    ax = new_axes(ax)
    note_if_empty(ax, len(probs))
    seen = table.count > 0
    bars = ax.bar(table.lower[seen], table.accuracy[seen], width=1.0 / n_bins, align="edge",
                  color="#4c78a8", edgecolor="white", label="accuracy in bin")  # fmt: skip
    ax.bar_label(bars, labels=[f"{c}" for c in table.count[seen]], fontsize=8, padding=2)
    ax.plot(table.confidence[seen], table.confidence[seen], "o", color="black", markersize=3,
            label="mean confidence in bin")  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    title = f"Reliability ({len(probs)} rows, ECE {ece:.3f}); numbers: rows per bin"
    ax.set(xlim=(0, 1), ylim=(0, 1.1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=title)  # fmt: skip
    legend_outside(ax)
    return ax


def confusion_matrix(
    source: Any, targets: Any, *, normalize: bool = False, ax: Axes | None = None
) -> Axes:
    """Counts of true (rows) against predicted (columns) class; ``normalize`` shows each true
    class's row as shares instead."""
    probs, labels = probs_labels(source)
    counts = calibration.confusion_matrix(probs, _indices(source, targets))
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    ax = new_axes(ax, size=(1.2 * len(labels) + 2.5, 0.9 * len(labels) + 1.5))
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-9))
    high = 0.6 * float(values.max())
    for (i, j), v in np.ndenumerate(values):
        text = f"{v:.2f}" if normalize else f"{int(v)}"
        ax.text(j, i, text, ha="center", va="center", color="white" if v > high else "black")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=30, ha="right")
    ax.set_yticks(ticks, labels)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    shares = "; shares of each true class" if normalize else ""
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"Confusion matrix ({counts.sum()} rows, accuracy {accuracy:.1%}{shares})")
    return ax


def risk_coverage(
    source: Any,
    targets: Any,
    *,
    thresholds: tuple[float, ...] = (0.5, 0.7, 0.9),
    ax: Axes | None = None,
) -> Axes:
    """Accuracy of the accepted rows against the share accepted, as the confidence threshold
    moves from 1 down to 0; ``thresholds`` are marked on the curve."""
    probs, _ = probs_labels(source)
    curve = calibration.risk_coverage(probs, _indices(source, targets))
    ax = new_axes(ax)
    ax.step(curve.coverage, curve.accuracy, where="post", color="#4c78a8",
            label="accuracy of accepted rows")  # fmt: skip
    if len(curve.accuracy):
        ax.axhline(curve.accuracy[-1], color="grey", linestyle="--", label="accuracy of all rows")
    marks: dict[int, list[float]] = {}  # thresholds that accept the same rows share a mark
    for t in sorted(thresholds):
        accepted = np.flatnonzero(curve.threshold >= t)
        if len(accepted):
            marks.setdefault(int(accepted[-1]), []).append(t)
    for i, ts in marks.items():
        ax.plot(curve.coverage[i], curve.accuracy[i], "o", color=THRESHOLD_COLOR)
        right = curve.coverage[i] > 0.8  # near the right edge the label goes to the left
        ax.annotate("≥" + "/".join(f"{t:g}" for t in ts), (curve.coverage[i], curve.accuracy[i]),
                    fontsize=8, xytext=(-6 if right else 6, -14), textcoords="offset points",
                    ha="right" if right else "left")  # fmt: skip
    if marks:
        ax.plot([], [], "o", color=THRESHOLD_COLOR, label="confidence threshold")
    lowest = float(curve.accuracy.min()) if len(curve.accuracy) else 0.0
    ax.set(xlim=(0, 1.02), ylim=(max(0.0, lowest - 0.05), 1.02), ylabel="accuracy",
           xlabel="coverage (share of rows accepted)")  # fmt: skip
    ax.set_title(f"Risk-coverage ({len(probs)} rows)")
    legend_outside(ax)
    return ax
