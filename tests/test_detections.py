"""Detections to element rows, as pure functions: each post-processing rule mirrored in numpy
(threshold, Deformable DETR's top-k pairs, non-maximum suppression per class, dropped classes),
and the rows the mapping makes of what it kept; and the measures of element rows."""

import numpy as np
import pytest

from probhook.detections import (
    NO_OBJECT,
    Detections,
    element_rows,
    match_queries,
    query_boxes,
)
from probhook.elements import ELEMENT_COLUMNS, is_element_schema, measures


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def sigmoid(x):
    return (1 / (1 + np.exp(-x))).astype(np.float32)


def iou(a, b):
    x0, y0 = np.maximum(a[0], b[0]), np.maximum(a[1], b[1])
    x1, y1 = np.minimum(a[2], b[2]), np.minimum(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def post_process(probs, boxes, kind, threshold, top_k=100):
    """The image processors' rule, in numpy: (query, class, score, box) candidates."""
    if kind == "softmax":
        real = probs[:, :-1]
        score, label = real.max(axis=1), real.argmax(axis=1)
        queries = np.flatnonzero(score > threshold)
        return queries, label[queries], score[queries]
    flat = probs.reshape(-1)
    order = np.argsort(-flat, kind="stable")[: min(top_k, flat.size)]
    order = order[flat[order] > threshold]
    return order // probs.shape[1], order % probs.shape[1], flat[order]


def nms(queries, labels, scores, boxes, iou_threshold):
    """Greedy suppression per class, best first (torchvision's batched_nms)."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if all(
            labels[j] != labels[i] or iou(boxes[queries[i]], boxes[queries[j]]) <= iou_threshold
            for j in keep
        ):
            keep.append(int(i))
    return np.array(keep, np.int64)


def run(probs, boxes, kind, *, threshold=0.1, top_k=100, iou_threshold=0.05, dropped=()):
    """What deepdoctection's detector returns for these probabilities, mirrored."""
    q, label, score = post_process(probs, boxes, kind, threshold, top_k)
    candidates = Detections(label, score, boxes[q])
    keep = nms(q, label, score, boxes, iou_threshold)
    keep = keep[[label[k] not in dropped for k in keep]] if len(keep) else keep
    returned = Detections(label[keep], score[keep], boxes[q[keep]])
    return candidates, returned, q[keep]


def spread_boxes(n, rng, size=10.0):
    corner = rng.uniform(0, 1000, size=(n, 2))
    return np.hstack([corner, corner + size])  # small and far apart: nothing overlaps


def test_softmax_rows_are_the_queries_of_the_kept_detections():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 2, size=(30, 7)))
    boxes = spread_boxes(30, rng)
    candidates, returned, queries = run(probs, boxes, "softmax")
    assert len(returned) > 3
    rows = element_rows(
        probs,
        "softmax",
        query_boxes=boxes,
        threshold=0.1,
        candidates=candidates,
        returned=returned,
        stored=range(len(returned)),
    )
    assert rows.query.tolist() == queries.tolist()
    assert rows.column.tolist() == returned.labels.tolist()
    np.testing.assert_array_equal(rows.probs, probs[queries])
    chosen = rows.probs[np.arange(len(rows)), rows.column]
    np.testing.assert_array_equal(chosen, returned.scores)  # the stored score, bit for bit
    # the category is the most probable real class (the no-object column is not one)
    assert (rows.column == rows.probs[:, :-1].argmax(axis=1)).all()
    assert rows.reason == [None] * len(rows)


def test_a_sigmoid_query_can_give_two_elements_whose_rows_are_its_scores():
    probs = np.full((4, 3), 0.01, np.float32)
    probs[1] = [0.9, 0.6, 0.01]  # one query, two classes above the threshold
    probs[3] = [0.01, 0.01, 0.5]
    boxes = np.array([[0, 0, 10, 10], [100, 100, 150, 150], [300, 0, 320, 5], [0, 500, 50, 600.0]])
    candidates, returned, _queries = run(probs, boxes, "sigmoid")
    rows = element_rows(
        probs,
        "sigmoid",
        query_boxes=boxes,
        threshold=0.1,
        top_k=100,
        candidates=candidates,
        returned=returned,
        stored=[0, 1, 2],
    )
    assert rows.query.tolist() == [1, 1, 3]
    assert rows.column.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(rows.probs[0], rows.probs[1])  # the same query's row
    m = measures(rows.probs, ("a", "b", "c"), rows.column + 1, np.array(["sigmoid"] * 3, object))
    np.testing.assert_allclose(m.confidence, [0.9, 0.6, 0.5])
    # the second element of query 1 is its query's second choice: a negative margin
    np.testing.assert_allclose(m.margin, [0.3, -0.3, 0.49], atol=1e-6)
    assert np.isnan(m.entropy).all()  # independent scores: no distribution, no entropy
    assert m.predicted.tolist() == [0, 1, 2]


def test_ties_are_told_apart_by_the_box():
    """Saturated scores: several queries score exactly 1.0 for one class; each detection goes
    to the query whose box it has, and no query is used twice."""
    probs = np.zeros((5, 3), np.float32)
    probs[:, 2] = 1.0  # no object
    probs[[0, 2, 4], 0] = 1.0
    probs[[0, 2, 4], 2] = 0.0
    boxes = np.array([[0, 0, 10, 10], [1, 1, 2, 2], [50, 50, 60, 60], [3, 3, 4, 4],
                      [90, 0, 99, 9.0]])  # fmt: skip
    returned = Detections(np.array([0, 0, 0]), np.array([1.0, 1.0, 1.0]), boxes[[4, 0, 2]])
    assert match_queries(probs, boxes, returned).tolist() == [4, 0, 2]
    # identical boxes too: the detections still take distinct queries
    same = np.tile(boxes[:1], (5, 1))
    found = match_queries(probs, same, Detections(np.array([0, 0, 0]), np.ones(3), same[:3]))
    assert sorted(found.tolist()) == [0, 2, 4]


def test_a_detection_from_elsewhere_is_refused():
    probs = softmax(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="matches no query"):
        match_queries(probs, np.zeros((3, 4)), Detections(np.array([0]), np.array([0.9]),
                                                          np.zeros((1, 4))))  # fmt: skip
    with pytest.raises(ValueError, match="outside the 3 columns"):
        match_queries(probs, np.zeros((3, 4)), Detections(np.array([5]), np.array([0.3]),
                                                          np.zeros((1, 4))))  # fmt: skip


def test_nms_and_threshold_discards_are_marked():
    """Overlapping boxes of one class: suppression keeps the best; discarded queries keep their
    rows, each with the stage it reached."""
    probs = np.array([
        [0.80, 0.10, 0.10],  # kept
        [0.60, 0.10, 0.30],  # same class, overlaps query 0: suppressed
        [0.05, 0.05, 0.90],  # below the threshold
        [0.10, 0.70, 0.20],  # class 1, overlaps query 0 but another class: kept
    ], np.float32)  # fmt: skip
    boxes = np.array([[0, 0, 100, 100], [10, 10, 110, 110], [500, 500, 510, 510],
                      [5, 5, 95, 95.0]])  # fmt: skip
    candidates, returned, queries = run(probs, boxes, "softmax")
    assert queries.tolist() == [0, 3]
    rows = element_rows(probs, "softmax", query_boxes=boxes, threshold=0.1,
                        candidates=candidates, returned=returned, stored=[0, 1],
                        discarded=True)  # fmt: skip
    assert rows.query.tolist() == [0, 3, 1, 2]
    assert rows.reason == [None, None, "nms", "threshold"]
    assert rows.element.tolist() == [0, 1, -1, -1]
    assert rows.column.tolist() == [0, 1, 0, 0]  # a discarded query: its best real class
    np.testing.assert_array_equal(rows.boxes, boxes[[0, 3, 1, 2]])


def test_dropped_classes_top_k_and_unstored_detections_are_marked():
    probs = np.array([
        [0.95, 0.05, 0.05, 0.05],  # returned, but the service did not store it
        [0.05, 0.90, 0.05, 0.05],  # stored
        [0.05, 0.05, 0.05, 0.85],  # only a candidate of a dropped class
        [0.05, 0.08, 0.02, 0.10],  # nothing above the threshold (0.1 is not above it)
        [0.20, 0.05, 0.05, 0.05],  # above it, but not among the top 3 pairs
    ], np.float32)  # fmt: skip
    boxes = spread_boxes(5, np.random.default_rng(0))
    candidates, returned, queries = run(probs, boxes, "sigmoid", top_k=3, dropped={3})
    assert queries.tolist() == [0, 1]
    assert len(candidates) == 3
    rows = element_rows(probs, "sigmoid", query_boxes=boxes, threshold=0.1, top_k=3,
                        candidates=candidates, returned=returned, stored=[1], dropped={3},
                        discarded=True)  # fmt: skip
    assert rows.query.tolist() == [1, 0, 2, 3, 4]
    assert rows.reason == [None, "service", "category", "threshold", "top_k"]
    assert rows.column.tolist() == [1, 0, 3, 3, 0]


def test_stored_order_is_the_services_order():
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 2, size=(20, 4)))
    boxes = spread_boxes(20, rng)
    candidates, returned, queries = run(probs, boxes, "softmax")
    order = list(range(len(returned)))[::-1]
    rows = element_rows(probs, "softmax", query_boxes=boxes, threshold=0.1,
                        candidates=candidates, returned=returned, stored=order)  # fmt: skip
    assert rows.query.tolist() == queries[order].tolist()
    with pytest.raises(ValueError, match="distinct indices"):
        element_rows(probs, "softmax", query_boxes=boxes, threshold=0.1, candidates=candidates,
                     returned=returned, stored=[0, 0])  # fmt: skip


def test_query_boxes_are_corners_in_pixels():
    out = query_boxes(np.array([[0.5, 0.25, 0.2, 0.1]]), height=200, width=100)
    np.testing.assert_allclose(out, [[40, 40, 60, 60]])


def test_softmax_measures_are_taken_at_the_element_class():
    probs = np.array([[0.30, 0.25, 0.45], [0.60, 0.39, 0.01]])  # table, figure, no_object
    labels = ("table", "figure", NO_OBJECT)
    m = measures(probs, labels, np.array([1, 1]), np.array(["softmax"] * 2, object))
    # no object is the most probable column of row 0, but the element is a table
    assert m.predicted.tolist() == [0, 0]
    np.testing.assert_allclose(m.confidence, [0.30, 0.60])
    np.testing.assert_allclose(m.margin, [0.05, 0.21])  # against figure, not no object
    expected = -(probs * np.log(probs)).sum(axis=1)  # over all columns
    np.testing.assert_allclose(m.entropy, expected)
    with pytest.raises(ValueError, match="do not name one of the 2 classes"):
        measures(probs, labels, np.array([3, 1]), np.array(["softmax"] * 2, object))


def test_element_schema():
    assert is_element_schema(ELEMENT_COLUMNS)
    assert not is_element_schema({"word_id": "str"})
