"""DETR-family detections to element rows: which query each detection came from, and the queries a
detector discarded. Pure numpy: the integration hands in one forward's probabilities and what the
detector's post-processing kept.

Two kinds of detector, as their image processors post-process them:

``"softmax"`` (DETR, Table Transformer)
    a softmax over the classes plus a last "no object" column; a query's score is its highest
    real-class probability and its class that column; queries scoring above the threshold are
    candidates, in query order.
``"sigmoid"`` (Deformable DETR)
    an independent sigmoid per query and class; the ``top_k`` highest (query, class) pairs over
    the whole forward are candidates when they score above the threshold, best first: one query
    can give candidates of several classes.

Non-maximum suppression, per class, then removes candidates, and the integration drops classes it
does not know. Each detection that is kept is matched back to its query by its class and score
(and, where several queries score the same, by its box): the row of an element is its query's
probabilities, in which the value at the element's class is its score.

Examples:
    >>> import numpy as np
    >>> from probhook.detections import Detections, element_rows
    >>> probs = np.array([[.7, .1, .2], [.05, .05, .9], [.3, .5, .2]], np.float32)
    >>> boxes = np.array([[0, 0, 10, 10], [0, 0, 5, 5], [20, 20, 30, 30]], float)
    >>> kept = Detections(np.array([1, 0]), probs[[2, 0], [1, 0]], boxes[[2, 0]])
    >>> rows = element_rows(probs, "softmax", query_boxes=boxes, threshold=0.1,
    ...                     candidates=kept, returned=kept, stored=[0, 1], discarded=True)
    >>> rows.query.tolist(), rows.column.tolist(), rows.reason
    ([2, 0, 1], [1, 0, 0], [None, None, 'threshold'])
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
KINDS: tuple[str, ...] = ("softmax", "sigmoid")
NO_OBJECT = "no_object"
"""The label of a softmax detector's last column: the probability that a query is no object."""
REASONS: tuple[str, ...] = ("threshold", "top_k", "category", "nms", "service")
"""Why a query gave no element, from the earliest stage to the latest: no class above the
threshold; above it, but not among the ``top_k`` pairs (sigmoid detectors); only candidates of
classes the integration drops (filtered, or unknown to it); all its candidates removed by
non-maximum suppression; kept by the detector but not stored by the service that ran it."""
SCORE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Detections:
    """Detections of one forward, each a model column (class), a score and an ``x0, y0, x1, y1``
    box in the detector's input-image pixels."""

    labels: Array
    scores: Array
    boxes: Array

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 4)))


@dataclass(frozen=True)
class ElementRows:
    """One row per stored element (in the order they were stored), then, when asked, one per
    discarded query (in query order). ``element`` indexes the detections that were returned
    (-1 for a discarded query); ``reason`` is None for an element, else one of
    [`REASONS`][REASONS]."""

    query: Array
    column: Array
    element: Array
    reason: list[str | None]
    probs: npt.NDArray[np.float32]
    boxes: Array  # each row's query box (input-image pixels)

    def __len__(self) -> int:
        return len(self.query)


def check_kind(kind: str) -> None:
    """``kind`` is one of [`KINDS`][KINDS]."""
    if kind not in KINDS:
        raise ValueError(f"detector kind must be one of {KINDS}, got {kind!r}")


def real_classes(probs: Array, kind: str) -> Array:
    """The columns of real classes: a softmax detector's last column is "no object"."""
    check_kind(kind)
    return probs[:, :-1] if kind == "softmax" else probs


def activate(logits: Array, kind: str) -> npt.NDArray[np.float32]:
    """Probabilities as the post-processing computes them, in float32: a softmax over the last
    axis, or an elementwise sigmoid. (numpy's float32 exponential can differ from torch's in
    the last bit: values agree within 2e-7.)"""
    check_kind(kind)
    x = np.asarray(logits, np.float32)
    with np.errstate(over="ignore"):  # exp(-x) of a very negative logit: inf, sigmoid 0
        if kind == "softmax":
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            out: npt.NDArray[np.float32] = e / e.sum(axis=-1, keepdims=True)
        else:
            out = np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
    return out


def query_boxes(pred_boxes: Array, height: float, width: float) -> npt.NDArray[np.float64]:
    """``(cx, cy, w, h)`` boxes relative to the image as ``x0, y0, x1, y1`` pixels."""
    b = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    cx, cy, w, h = b.T
    corners = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)
    out: npt.NDArray[np.float64] = corners * np.array([width, height, width, height])
    return out


def match_queries(probs: Array, boxes: Array, detections: Detections) -> npt.NDArray[np.int64]:
    """The query of each detection: one whose probability at the detection's class is its
    score; where several are (saturated or tied scores), the one whose box is nearest. A
    (query, class) pair gives one detection at most."""
    probs = np.asarray(probs)
    labels = np.asarray(detections.labels, np.int64)
    outside = (labels < 0) | (labels >= probs.shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"detection {i} has class {labels[i]}, outside the {probs.shape[1]} "
                         "columns of the forward")  # fmt: skip
    # (queries, detections): which queries score each detection's score at its class
    near = np.abs(probs[:, labels].astype(np.float64) - detections.scores) <= SCORE_TOLERANCE
    out: npt.NDArray[np.int64] = near.argmax(axis=0).astype(np.int64)
    pairs = out * probs.shape[1] + labels
    if (near.sum(axis=0) == 1).all() and len(np.unique(pairs)) == len(pairs):
        return out  # the common case: one query each, and no query twice for a class
    used: set[tuple[int, int]] = set()
    for i, (label, score, box) in enumerate(
        zip(labels.tolist(), detections.scores.tolist(), detections.boxes, strict=True)
    ):
        queries = [q for q in np.flatnonzero(near[:, i]).tolist() if (q, label) not in used]
        if not queries:
            raise ValueError(
                f"detection {i} (class {label}, score {score:.8f}) matches no query of the "
                "forward: the detections do not come from these probabilities"
            )
        if len(queries) > 1:
            distance = np.abs(np.asarray(boxes)[queries] - np.asarray(box)).max(axis=1)
            queries = [queries[int(np.argmin(distance))]]
        out[i] = queries[0]
        used.add((queries[0], label))
    return out


def element_rows(
    probs: Array,
    kind: str,
    *,
    query_boxes: Array,
    threshold: float,
    candidates: Detections,
    returned: Detections,
    stored: Sequence[int],
    top_k: int | None = None,
    dropped: Collection[int] = (),
    discarded: bool = False,
) -> ElementRows:
    """The rows of one forward.

    Args:
        probs: ``(queries, columns)`` probabilities, activated as the post-processing does.
        kind: ``"softmax"`` or ``"sigmoid"`` (see the module docstring).
        query_boxes: ``(queries, 4)`` boxes, in the pixels of the detections' boxes.
        threshold: the post-processing's score threshold; ``top_k`` its pair limit (sigmoid).
        candidates: what the post-processing kept, before non-maximum suppression.
        returned: what the detector returned (after suppression, without dropped classes).
        stored: the indices into ``returned`` of the detections the service stored as
            elements, in the order it stored them.
        dropped: model columns the integration drops (filtered or unknown classes).
        discarded: also a row for each query that gave no element.
    """
    check_kind(kind)
    probs = np.asarray(probs)
    boxes = np.asarray(query_boxes, np.float64)
    if probs.ndim != 2 or boxes.shape != (len(probs), 4):
        raise ValueError(f"probabilities {probs.shape} and query boxes {boxes.shape} must be "
                         "(queries, columns) and (queries, 4)")  # fmt: skip
    stored = list(stored)
    if sorted(set(stored)) != sorted(stored) or any(not 0 <= s < len(returned) for s in stored):
        raise ValueError(f"stored {stored} must be distinct indices into the {len(returned)} "
                         "returned detections")  # fmt: skip
    returned_query = match_queries(probs, boxes, returned)
    element = np.asarray(stored, np.int64)
    query = returned_query[element]
    column = returned.labels[element].astype(np.int64)
    reason: list[str | None] = [None] * len(element)
    if discarded:
        reasons = _discard_reasons(probs, kind, boxes, threshold, top_k, candidates,
                                   returned_query, stored, dropped)  # fmt: skip
        lost = np.array(sorted(reasons), np.int64)
        query = np.concatenate([query, lost])
        best = real_classes(probs, kind)[lost].argmax(axis=1) if len(lost) else lost
        column = np.concatenate([column, best])
        element = np.concatenate([element, np.full(len(lost), -1, np.int64)])
        reason += [reasons[q] for q in lost.tolist()]
    rows = np.ascontiguousarray(probs[query], np.float32)
    return ElementRows(query, column, element, reason, rows, boxes[query])


def _discard_reasons(
    probs: Array,
    kind: str,
    boxes: Array,
    threshold: float,
    top_k: int | None,
    candidates: Detections,
    returned_query: Array,
    stored: Sequence[int],
    dropped: Collection[int],
) -> dict[int, str]:
    """For each query without a stored element, the latest stage any of its pairs reached."""
    n_queries = len(probs)
    stage = np.zeros(n_queries, np.int64)  # index into REASONS
    best = real_classes(probs, kind).max(axis=1)
    if kind == "sigmoid" and top_k is not None:
        stage[best > threshold] = REASONS.index("top_k")
    candidate_query = match_queries(probs, boxes, candidates)
    dropped = set(dropped)
    for q, label in zip(candidate_query.tolist(), candidates.labels.tolist(), strict=True):
        reached = "category" if label in dropped else "nms"
        stage[q] = max(stage[q], REASONS.index(reached))
    stage[returned_query] = REASONS.index("service")
    has_element = np.zeros(n_queries, bool)
    has_element[returned_query[list(stored)]] = True
    return {q: REASONS[stage[q]] for q in np.flatnonzero(~has_element).tolist()}
