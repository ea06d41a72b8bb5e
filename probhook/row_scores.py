"""What every reader of a run (the accuracy estimate, drift, review thresholds, the report)
measures a row by: the column it predicts, its probability there (its confidence) and its
normalised entropy.

A page or word row predicts its argmax. An element row predicts its element's own class, the
category deepdoctection stored, which need not be the argmax: a softmax detector's row may put
most of its mass on "no object" (an element stored at 0.2 with ``no_object`` at 0.7 is among the
least sure, not a sure one), and a sigmoid detector may keep a query's second class as an
element of its own. The queries a detector discarded (kept with ``discarded=True``) are no
elements and are left out. A sigmoid row's scores are no distribution: its entropy is that of
its element's yes/no score, in bits (0: sure, 1: a coin toss).

Examples:
    >>> import numpy as np
    >>> p = np.array([[0.2, 0.1, 0.7], [0.6, 0.3, 0.1]])
    >>> predicted, confidence, _ = scores(p, at=np.array([0, 1]))
    >>> predicted.tolist(), confidence.tolist()
    ([0, 1], [0.2, 0.3])
    >>> scores(p)[1].tolist()  # a page row's: its argmax
    [0.7, 0.6]
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook.chunk import Chunk
from probhook.elements import is_element_schema

MEASURED_BY = ("category_id", "activation", "discarded")
"""The columns an element row is measured by, where a file has them."""


def measured_columns(columns: Collection[str]) -> tuple[str, ...]:
    """The columns a reader must add to measure rows with ``columns`` (none but for elements)."""
    return tuple(c for c in MEASURED_BY if c in columns) if is_element_schema(columns) else ()


def scores(
    probs: npt.NDArray[np.float64],
    at: npt.NDArray[np.int64] | None = None,
    sigmoid: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Predicted column, confidence and normalised entropy of finite rows ``probs`` (``at``:
    the column each row is measured at, else its argmax; ``sigmoid``: rows of yes/no scores)."""
    predicted = probs.argmax(axis=1) if at is None else np.asarray(at, np.int64)
    confidence = probs[np.arange(len(probs)), predicted]
    entropy = metrics.entropy(probs, normalized=True)
    if sigmoid is not None and sigmoid.any():
        c = np.clip(confidence[sigmoid], 1e-12, 1 - 1e-12)
        entropy[sigmoid] = -(c * np.log2(c) + (1 - c) * np.log2(1 - c))
    return predicted, confidence, entropy


def element_chunk(chunk: Chunk) -> Chunk:
    """An element file's chunk as it is measured: the discarded queries left out, each row at
    its element's class."""
    columns = chunk.columns
    reasons = columns["discarded"].tolist() if "discarded" in columns else []
    kept = np.flatnonzero([r is None or r == "" or r != r for r in reasons])  # r != r: NaN
    if len(kept) < len(reasons):
        columns = columns.subset(kept)
        chunk = Chunk(chunk.probs[kept], columns)
    ids = np.asarray(columns["category_id"], np.float64)
    width = chunk.probs.shape[1]
    if len(ids) and not (np.isfinite(ids).all() and ids.min() >= 1 and ids.max() <= width):
        wrong = sorted({x for x in ids.tolist() if not 1 <= x <= width})[:5]
        raise ValueError(f"element rows name category ids outside 1..{width}: {wrong}")
    sigmoid = (np.asarray(columns["activation"], object) == "sigmoid"
               if "activation" in columns else None)  # fmt: skip
    return Chunk(chunk.probs, columns, ids.astype(np.int64) - 1, sigmoid)
