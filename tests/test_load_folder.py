"""``probhook.load`` on a folder of Parquet files, as several writers (Ray workers) leave it."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import probhook
from probhook import ProbBuffer
from probhook.head_view import HeadView


def view(keys, probs, labels=("no", "yes")):
    out = HeadView("clf", buffer=ProbBuffer(2, 8, labels=list(labels)))
    out.buffer.append_batch(np.array(probs, np.float32), keys=keys)
    return out


def test_a_folder_reads_as_one_view_with_its_rows_renumbered(tmp_path):
    view(["a", "b"], [[0.9, 0.1], [0.2, 0.8]]).to_parquet(tmp_path / "part-0.parquet")
    view(["c"], [[0.4, 0.6]]).to_parquet(tmp_path / "part-1.parquet")  # its seq starts at 0 too
    loaded = probhook.load(tmp_path)
    assert loaded.keys == ["a", "b", "c"]
    assert loaded.rows().seq.tolist() == [0, 1, 2]
    assert loaded.get("c").predicted == "yes"
    assert loaded.probs.dtype == np.float32
    expected = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]], np.float32)
    assert np.array_equal(loaded.probs, expected)


def test_only_rows_with_status_ok_are_read(tmp_path):
    table = view(["a", "b"], [[0.9, 0.1], [0.2, 0.8]]).to_arrow()
    status = pa.array(["ok", "unreadable (PdfError: ...)"])
    table = table.append_column("status", status).replace_schema_metadata(table.schema.metadata)
    pq.write_table(table, tmp_path / "part-0.parquet")
    assert probhook.load(tmp_path).keys == ["a"]


def test_files_with_different_label_spaces_or_none_are_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no Parquet file"):
        probhook.load(tmp_path)
    view(["a"], [[0.9, 0.1]]).to_parquet(tmp_path / "part-0.parquet")
    view(["b"], [[0.9, 0.1]], labels=("cat", "dog")).to_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(ValueError, match="different label spaces"):
        probhook.load(tmp_path)


def test_stray_files_are_skipped_with_a_warning_naming_one(tmp_path):
    view(["a"], [[0.9, 0.1]]).to_parquet(tmp_path / "part-0.parquet")
    (tmp_path / "notes.txt").write_text("not rows")
    (tmp_path / "_SUCCESS").write_text("")  # a writer's marker: skipped silently
    with pytest.warns(RuntimeWarning, match=r"1 files that are not \.parquet \(e\.g\. notes\.txt"):
        assert probhook.load(tmp_path).keys == ["a"]
