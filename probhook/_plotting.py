"""What every plot shares: its axes, where its legend goes, how it reads a source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook._extras import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes

THRESHOLD_COLOR = "#d62728"


def new_axes(ax: Axes | None, size: tuple[float, float] = (7.0, 3.5)) -> Axes:
    """``ax``, or the axes of a new figure (constrained layout, room for an outside legend)."""
    if ax is not None:
        return ax
    require("matplotlib", "notebook", "plots")
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=size, layout="constrained")
    return new


def legend_outside(ax: Axes) -> None:
    """The legend right of the plot area, where it cannot cover bars."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def probs_labels(source: Any) -> tuple[npt.NDArray[np.float64], list[str]]:
    """The ``(n, C)`` probabilities and the class names of ``source``."""
    if hasattr(source, "probs") and hasattr(source, "labels"):
        return np.asarray(source.probs, dtype=np.float64), list(source.labels)
    probs = np.asarray(source, dtype=np.float64)
    return probs, [str(i) for i in range(probs.shape[1] if probs.ndim == 2 else 0)]
