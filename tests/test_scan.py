"""Reading a head's rows in chunks from wherever they are: a sink's files (one per head), a torn
stream, a Parquet file never finished, folders with one label space or several."""

import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import probhook
from probhook import capture_probs, scan


def two_heads(path):
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
    with capture_probs([a, b], capacity=100, sink=path) as cap:
        for _ in range(5):
            a(torch.randn(3, 4))
            b(torch.randn(2, 4))
    return cap


def test_a_sinks_files_are_the_heads_of_one_run(tmp_path, monkeypatch):
    cap = two_heads(tmp_path / "run.parquet")
    (tmp_path / "run.old.backup.parquet").write_bytes(b"")  # not a head's name: ignored
    heads = scan.run_heads(tmp_path / "run.parquet")
    assert set(heads) == set(cap.heads) == {"model0", "model1"}
    monkeypatch.setattr(scan, "CHUNK_ROWS", 4)
    for name, rows in heads.items():
        chunks = list(rows.chunks(["key"]))
        probs = np.concatenate([c.probs for c in chunks])
        np.testing.assert_array_equal(probs, cap.heads[name].probs)
        assert rows.labels == cap.heads[name].labels
    with pytest.raises(KeyError, match=r"has no column 'page'; its columns: \['key', 'head'\]"):
        heads["model0"].chunks(["page"])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        scan.run_heads(tmp_path / "other.parquet")


def test_a_torn_stream_and_an_unfinished_parquet_file_are_read_as_load_reads_them(tmp_path):
    path = tmp_path / "run.arrows"
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=path, flush_rows=1) as cap:
        for _ in range(4):
            model(torch.randn(5, 4))
            cap.head.buffer.flush()
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # a killed writer: the last block cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = scan.open_rows(path)
        n = sum(len(c) for c in rows.chunks())
    with pytest.warns(RuntimeWarning):
        loaded = probhook.load(path)
    assert n == len(loaded) < 20
    assert any("incomplete block" in str(w.message) for w in caught)
    unfinished = tmp_path / "never.parquet"
    (tmp_path / "never.parquet.partial.arrows").write_bytes(data)
    with pytest.warns(RuntimeWarning, match="was never finished"):
        assert sum(len(c) for c in scan.open_rows(unfinished).chunks()) == 20


def test_folders_hold_one_label_space(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, labels in enumerate([["a", "b"], ["a", "b"]]):
        model = torch.nn.Linear(4, 2)
        with capture_probs(model, labels=labels) as cap:
            model(torch.randn(3, 4))
        cap.to_parquet(folder / f"part-{i}.parquet")
    rows = scan.open_rows(folder)
    assert sum(len(c) for c in rows.chunks()) == 6
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, labels=["x", "y", "z"]) as cap:
        model(torch.randn(3, 4))
    cap.to_parquet(folder / "part-9.parquet")
    with pytest.raises(ValueError, match="hold different label spaces"):
        scan.open_rows(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no Parquet file"):
        scan.open_rows(empty)
    plain = tmp_path / "plain.parquet"
    pq.write_table(cap.to_arrow().replace_schema_metadata({}), plain)
    with pytest.raises(ValueError, match="was not written by probhook"):
        scan.open_rows(plain)
    with pytest.raises(TypeError, match=r"expected a capture, a head, .* got int"):
        scan.open_rows(5)


def test_a_stream_whose_key_types_changed_reads_in_one_encoding(tmp_path):
    model = torch.nn.Linear(4, 3)
    path = tmp_path / "run.arrows"
    with capture_probs(model, sink=path, flush_rows=1) as cap:
        for key in (None, 1, 2, "x", ("doc", 3)):  # three segments in the stream
            with cap.key(key):
                model(torch.randn(1, 4))
    rows = scan.open_rows(path)
    chunks = list(rows.chunks(["key"]))
    keys = [k for c in chunks for k in c.columns["key"]]
    assert keys == cap.keys
    np.testing.assert_array_equal(np.concatenate([c.probs for c in chunks]), cap.probs)
