"""A capture with no rows reads as values: empty tables and files with their columns, empty plots
with a note, reprs; and ``a.merge(b)`` keeps ``a``'s rows."""

import numpy as np
import pytest
import torch

from probhook import ProbBuffer, capture_probs, load

DERIVED = ["seq", "key", "head", "finite", "predicted", "confidence", "margin", "entropy"]


def never_started():
    return capture_probs(torch.nn.Linear(2, 3), labels=["a", "b", "c"])


def started_without_forward():
    cap = capture_probs(torch.nn.Linear(2, 3), labels=["a", "b", "c"])
    cap.start()
    cap.stop(warn=False)
    return cap


@pytest.mark.parametrize("make", [never_started, started_without_forward])
def test_empty_capture_exports_empty_tables_and_files(make, tmp_path):
    cap = make()
    df = cap.to_pandas()
    assert len(df) == 0
    if cap.heads:  # labels are known once the capture started
        assert df.columns.tolist() == [*DERIVED, "p_a", "p_b", "p_c"]
    else:
        assert df.columns.tolist()[: len(DERIVED)] == DERIVED
    path = cap.to_parquet(tmp_path / "empty.parquet")
    back = load(path)
    assert len(back) == 0
    assert back.to_pandas().columns.tolist() == df.columns.tolist()
    assert back.get("anything") is None


def test_empty_head_without_labels_round_trips(tmp_path):
    cap = capture_probs(torch.nn.Linear(2, 3))
    cap.start()
    cap.stop(warn=False)
    back = load(cap.to_parquet(tmp_path / "none.parquet"))
    assert back.labels == ()
    assert back.to_pandas().columns.tolist() == DERIVED


@pytest.mark.parametrize("make", [never_started, started_without_forward])
def test_empty_capture_plots_and_reprs(make):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    cap = make()
    axes = [
        cap.plot.confidence(),
        cap.plot.uncertainty(),
        cap.plot.reliability([]),
        cap.plot.class_means(),
    ]
    for ax in axes:
        assert [t.get_text() for t in ax.texts] == ["no rows captured"]
    assert "0 rows" in repr(cap.head) or "no heads yet" in repr(cap)
    assert "no rows captured" in cap._repr_html_()
    with pytest.raises(ValueError, match="no rows to score"):
        cap.calibration(["a"])


def test_dict_of_heads_that_saw_no_forward_are_empty_values():
    cap = capture_probs([torch.nn.Linear(2, 3), torch.nn.Linear(2, 2)])
    cap.start()
    cap.stop(warn=False)
    for view in cap.heads.values():
        assert len(view.to_pandas()) == 0
        assert view.top_k() == []
        assert view.rows().probs.shape[0] == 0


def test_merge_called_on_an_instance_includes_it():
    a, b = ProbBuffer(2, 10), ProbBuffer(2, 10)
    a.append(np.array([1.0, 0.0], np.float32), key="a0")
    b.append(np.array([0.0, 1.0], np.float32), key="b0")
    a.append(np.array([0.5, 0.5], np.float32), key="a1")
    assert a.merge(b).keys == ["a0", "b0", "a1"]
    assert ProbBuffer.merge(a, b).keys == ["a0", "b0", "a1"]
    assert a.merge(b, capacity=2).keys == ["b0", "a1"]
    assert a.merge().keys == ["a0", "a1"]
