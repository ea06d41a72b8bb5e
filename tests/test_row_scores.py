"""Element rows are judged at their element's own class by every reader of a run: the accuracy
estimate, drift, review thresholds and the report's queue, never at an argmax that may be "no
object"; the queries a detector discarded are no elements."""

import numpy as np
import pytest
from element_files import write_elements

import probhook
from probhook.chunk import Chunk, of_arrays
from probhook.row_scores import element_chunk, scores
from probhook.run_stats import run_stats

# e1: stored as a table at 0.2, "no object" at 0.7: among the least sure, not a sure one;
# the last query gave no element
PROBS = [[0.2, 0.1, 0.7], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.05, 0.05, 0.9]]


def _element_file(path):
    return write_elements(path, PROBS, [1, 1, 2, 1], image_ids=["p1", "p1", "p2", "p1"],
                          discarded=["", "", "", "below threshold"])  # fmt: skip


def test_an_element_row_is_measured_at_its_own_class_and_discarded_queries_are_left_out(tmp_path):
    stats = run_stats(_element_file(tmp_path / "run.layout.parquet"))
    assert stats.n == 3
    assert stats.class_counts.tolist() == [2, 1, 0]
    np.testing.assert_allclose(np.sort(stats.values("confidence")), [0.2, 0.6, 0.8], rtol=1e-6)
    assert stats.estimate().accuracy == pytest.approx((0.2 + 0.8 + 0.6) / 3, rel=1e-6)


def test_estimate_and_review_threshold_of_a_loaded_element_head_use_the_element_class(tmp_path):
    view = probhook.load(_element_file(tmp_path / "run.layout.parquet"))
    assert view.estimate_accuracy().accuracy == pytest.approx((0.2 + 0.8 + 0.6) / 3, rel=1e-6)
    # every row right at its own class: nothing is wrong, whatever its argmax says
    rule = view.review_threshold(["table", "table", "figure", "table"], max_error=0.5, delta=0.5)
    assert rule.error == 0.0


def test_a_sigmoid_row_s_entropy_is_that_of_its_yes_no_score():
    p = np.array([[0.5, 0.9], [0.9, 0.5]])
    _, confidence, entropy = scores(p, at=np.array([0, 0]), sigmoid=np.array([True, True]))
    assert confidence.tolist() == [0.5, 0.9]
    assert entropy[0] == pytest.approx(1.0)
    assert entropy[1] == pytest.approx(-(0.9 * np.log2(0.9) + 0.1 * np.log2(0.1)))


def test_discarded_rows_leave_the_chunk_with_their_columns_and_groups():
    columns = of_arrays({
        "category_id": np.array([1, 2, 1]), "activation": np.array(["softmax"] * 3, object),
        "discarded": np.array([None, "nms", None], object),
        "file_name": np.array(["a.pdf", "b.pdf", "c.pdf"], object),
    })  # fmt: skip
    chunk = element_chunk(Chunk(np.array([[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]]), columns))
    assert len(chunk) == 2
    assert chunk.at.tolist() == [0, 0]
    assert chunk.columns["file_name"].tolist() == ["a.pdf", "c.pdf"]
    assert chunk.columns.take("file_name", np.array([1])).tolist() == ["c.pdf"]
    found = chunk.columns.factorize("file_name")
    assert found.values == ["a.pdf", "c.pdf"]
    assert found.codes.tolist() == [0, 1]


def test_an_element_row_naming_no_class_is_an_error():
    columns = of_arrays({"category_id": np.array([3]), "discarded": np.array([None], object)})
    with pytest.raises(ValueError, match=r"category ids outside 1\.\.2: \[3\.0\]"):
        element_chunk(Chunk(np.array([[0.6, 0.4]]), columns))
