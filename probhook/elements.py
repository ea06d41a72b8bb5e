"""What the rows of a detector mean: one row per element a detector kept, and its measures.

A classifier's row predicts its most probable class. An element's class is decided by the
detector's post-processing, and its row is the distribution of the query it came from (see
[`probhook.detections`][probhook.detections]), so its measures are taken at the element's own
class (the ``category_id`` column, deepdoctection's 1-based class id):

* ``predicted``: the element's class. For a softmax detector (DETR, Table Transformer) it is
  the most probable real class; for a sigmoid one (Deformable DETR) a query can give elements of
  two classes, and the second one's row is the same row.
* ``confidence``: the row's value at that class, which is the score the detector stored.
* ``margin``: confidence minus the highest other *real* class (the "no object" column is not a
  class). For a sigmoid row it is negative when the query scores another class higher: the
  element is its query's second choice.
* ``entropy``: for a softmax row, the entropy of the whole distribution (real classes and "no
  object": how sure the detector is of what, and whether, something is there). A sigmoid row
  is not a distribution (its scores are independent yes/no probabilities and do not sum to
  one), so it has no entropy: NaN in exports, and reads that need it refuse.

Examples:
    >>> import numpy as np
    >>> from probhook.elements import measures
    >>> probs = np.array([[.5, .3, .2], [.3, .6, .1]])  # table, figure, no_object
    >>> m = measures(probs, ("table", "figure", "no_object"), np.array([1, 2]),
    ...              np.array(["softmax", "softmax"], object))
    >>> m.confidence.tolist(), np.round(m.margin, 2).tolist()
    ([0.5, 0.6], [0.2, 0.3])
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook.detections import NO_OBJECT

if TYPE_CHECKING:
    from probhook.block import ColumnKind

Array = npt.NDArray[Any]
ELEMENT_COLUMNS: Mapping[str, ColumnKind] = {
    "category": "str",
    "category_id": "int",
    "query": "int",
    "ulx": "int",
    "uly": "int",
    "lrx": "int",
    "lry": "int",
    "parent_id": "str",
    "activation": "str",
    "discarded": "str",
}
"""The columns of an element row (besides the page columns; its key is the element's
``annotation_id``): its category name and 1-based id and its box in page pixels as the
detector's service stored them, the query it came from, the annotation whose image the
detector saw (a table, for table structure; None for a page), ``"softmax"`` or ``"sigmoid"``,
and, for a query that gave no element, why (see
[`probhook.detections.REASONS`][probhook.detections.REASONS])."""
SIGMOID_ENTROPY = (
    "element rows of a sigmoid detector (Deformable DETR) have no entropy: each class has its "
    "own yes/no score and the scores do not sum to one, so they are not a distribution. Use "
    "min_confidence (the element's own score) or min_margin (its score minus the query's best "
    "other class) instead"
)


def is_element_schema(schema: Collection[str]) -> bool:
    """Whether rows with these columns (names, or a schema mapping them) are element rows."""
    return "category_id" in schema and "discarded" in schema


@dataclass(frozen=True)
class Measures:
    """Per row: the predicted column, confidence, margin, entropy in nats (NaN for sigmoid
    rows), whether the row is finite and whether it is a sigmoid row; ``width`` is the number of
    columns (``entropy / log(width)`` is the normalised entropy)."""

    predicted: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]
    margin: npt.NDArray[np.float64]
    entropy: npt.NDArray[np.float64]
    finite: npt.NDArray[np.bool_]
    sigmoid: npt.NDArray[np.bool_]
    width: int

    def normalized_entropy(self) -> npt.NDArray[np.float64]:
        """Entropy divided by the log of the number of columns (0: certain, 1: uniform)."""
        return self.entropy / np.log(self.width) if self.width > 1 else np.zeros_like(self.entropy)


def n_real(labels: Sequence[str]) -> int:
    """How many columns are classes (all but a last ``no_object`` one)."""
    return len(labels) - 1 if len(labels) and labels[-1] == NO_OBJECT else len(labels)


def measures(
    probs: Array, labels: Sequence[str], category_id: Array, activation: Array
) -> Measures:
    """The measures of element rows (see the module docstring)."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, n_classes), got {p.shape}")
    n, width = p.shape
    real = n_real(labels)
    chosen = np.asarray(category_id, np.int64) - 1
    if n and (chosen.min() < 0 or chosen.max() >= real):
        raise ValueError(f"category ids {sorted(set((chosen + 1).tolist()))} do not name one "
                         f"of the {real} classes {list(labels[:real])}")  # fmt: skip
    rows = np.arange(n)
    confidence = p[rows, chosen] if n else np.zeros(0)
    others = p[:, :real].copy()
    others[rows, chosen] = -np.inf
    second = others.max(axis=1) if real > 1 else np.full(n, -np.inf)
    margin = np.where(np.isfinite(second), confidence - second, 1.0)
    sigmoid = np.asarray(activation, object) == "sigmoid"
    entropy = np.where(sigmoid, np.nan, metrics.entropy(p))
    finite = np.asarray(np.isfinite(p).all(axis=1), bool)
    return Measures(chosen, confidence, margin, entropy, finite, sigmoid, width)
