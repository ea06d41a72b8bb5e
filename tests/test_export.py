import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

import probhook
from probhook import capture_probs
from probhook.arrow import read_table
from probhook.testing import make_pages, make_pipe, run_pipe


def run_linear(cap, model, n_batches, batch=10, offset=0):
    for i in range(n_batches):
        keys = [f"row-{offset + i * batch + j}" for j in range(batch)]
        with cap.keys_for(keys):
            model(torch.randn(batch, 4))


def test_to_pandas_columns_and_values(tiny):
    pipe = make_pipe(tiny("layoutlm"))
    with capture_probs(pipe) as cap:
        pages = run_pipe(pipe, make_pages(4, n_documents=2))
    df = cap.to_pandas()
    assert len(df) == 4
    expected = {
        "seq",
        "key",
        "head",
        "image_id",
        "document_id",
        "file_name",
        "location",
        "page_number",
        "page_error",
        "finite",
        "predicted",
        "confidence",
        "margin",
        "entropy",
    }
    assert expected | {f"p_{label}" for label in cap.labels} == set(df.columns)
    assert df["key"].tolist() == [p.image_id for p in pages]
    assert df["predicted"].tolist() == [str(p.document_type.value) for p in pages]
    np.testing.assert_allclose(df[[f"p_{label}" for label in cap.labels]].to_numpy(), cap.probs)
    np.testing.assert_allclose(df["confidence"], cap.confidence())
    assert df["page_number"].tolist() == [p.page_number for p in pages]


@pytest.mark.parametrize("suffix", [".parquet", ".arrows"])
def test_round_trip_through_file(tmp_path, suffix):
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, labels=["letter", "form", "memo"], keep_logits=True) as cap:
        run_linear(cap, model, 5)
    if suffix == ".parquet":
        path = cap.to_parquet(tmp_path / "run.parquet")
    else:
        path = tmp_path / "run.arrows"
        with capture_probs(
            model, labels=["letter", "form", "memo"], keep_logits=True, sink=path
        ) as cap:
            run_linear(cap, model, 5)
    loaded = probhook.load(path)
    np.testing.assert_array_equal(loaded.probs, cap.probs)
    np.testing.assert_array_equal(loaded.logits, cap.logits)
    assert loaded.labels == cap.labels
    assert loaded.keys == cap.keys
    assert loaded.get("row-7").top_k(3) == cap.get("row-7").top_k(3)
    assert loaded.buffer.seq.tolist() == cap.buffer.seq.tolist()


@pytest.mark.parametrize("suffix", [".parquet", ".arrows"])
def test_sink_holds_every_row_once_in_order(tmp_path, suffix):
    model = torch.nn.Linear(4, 3)
    path = tmp_path / f"run{suffix}"
    with capture_probs(model, capacity=50, sink=path) as cap:
        run_linear(cap, model, 50)  # 500 rows = 10x capacity
    assert len(cap) == 50
    assert cap.evicted == 450
    table = read_table(path)
    assert table.column("seq").to_pylist() == list(range(500))
    assert table.column("key").to_pylist() == [f"row-{i}" for i in range(500)]
    probs = np.column_stack([table.column(f"p_{i}").to_numpy() for i in range(3)])
    np.testing.assert_array_equal(probs[-50:], cap.probs)
    if suffix == ".parquet":  # written in row groups, not row by row; the stream is gone
        import pyarrow.parquet as pq

        assert pq.ParquetFile(path).num_row_groups <= 500 // 12
        assert sorted(os.listdir(tmp_path)) == ["run.parquet"]


def test_killed_process_leaves_readable_stream(tmp_path):
    path = tmp_path / "run.arrows"
    script = textwrap.dedent(f"""
        import sys, torch
        from probhook import capture_probs
        model = torch.nn.Linear(4, 3)
        with capture_probs(model, capacity=40, sink={str(path)!r}) as cap:
            for i in range(10**9):
                with cap.key(i):
                    model(torch.randn(1, 4))
                if i == 400:
                    print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    seq = read_table(path).column("seq").to_pylist()
    assert len(seq) >= 400
    assert seq == list(range(len(seq)))
    assert len(probhook.load(path)) == len(seq)


def test_two_heads_write_two_files(tmp_path):
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
    with capture_probs([a, b], capacity=5, sink=tmp_path / "run.parquet") as cap:
        for _ in range(4):
            a(torch.randn(3, 4))
            b(torch.randn(2, 4))
    assert sorted(os.listdir(tmp_path)) == ["run.model1.parquet", "run.parquet"]
    assert len(read_table(tmp_path / "run.parquet")) == 12
    assert len(read_table(tmp_path / "run.model1.parquet")) == 8
    assert cap.sink.paths["model0"].name == "run.parquet"


def test_closed_file_sink_refuses_rows_instead_of_overwriting(tmp_path):
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, capacity=2, sink=tmp_path / "run.parquet")
    with cap:
        model(torch.randn(3, 4))
    ran = []
    with pytest.raises(RuntimeError, match="sink was closed"), cap:  # refused at entry
        ran.append(model(torch.randn(3, 4)))
    assert ran == []
    assert len(read_table(tmp_path / "run.parquet")) == 3


def test_bad_sink_is_a_clear_error(tmp_path):
    model = torch.nn.Linear(4, 3)
    with (
        pytest.raises(ValueError, match=r"\.parquet or \.arrows"),
        capture_probs(model, sink=tmp_path / "x.csv"),
    ):
        model(torch.randn(1, 4))


def test_a_sink_with_the_error_policy_writes_only_the_rows_kept(tmp_path):
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=tmp_path / "x.parquet", on_overflow="error", capacity=3) as cap:
        model(torch.randn(2, 4))
        with pytest.raises(probhook.BufferFullError):
            model(torch.randn(2, 4))  # refused whole: neither kept nor written
        model(torch.randn(1, 4))
    assert len(cap) == 3
    assert probhook.load(tmp_path / "x.parquet").buffer.seq.tolist() == cap.buffer.seq.tolist()


def test_temperature_fitted_on_captured_logits_applies_live():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.mul_(10)
    x = torch.randn(300, 4)
    targets = (x @ torch.randn(4, 3)).argmax(1).numpy()
    with capture_probs(model, keep_logits=True) as cap:
        model(x)
    from probhook.calibration import fit_temperature

    t = fit_temperature(cap.logits, targets)
    with capture_probs(model, temperature=t) as scaled:
        model(x)
    assert scaled.calibration(targets)["nll"] < cap.calibration(targets)["nll"]
    names = [cap.labels[i] for i in targets]
    assert cap.calibration(names) == cap.calibration(targets)


def test_reading_results_fails_clearly_or_not_at_all(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = torch.nn.Linear(4, 3)
    with capture_probs(model) as cap:
        for key in (1, None, 3):
            with cap.key(key):
                model(torch.randn(1, 4))
    frame = cap.to_pandas()
    assert frame["key"].tolist()[::2] == [1, 3]  # ints, not floats, beside a missing key
    assert frame["key"].isna().tolist() == [False, True, False]
    table = cap.to_arrow()
    stripped = table.drop_columns(["p_0"]).replace_schema_metadata(table.schema.metadata)
    pq.write_table(stripped, tmp_path / "no-p.parquet")
    with pytest.raises(ValueError, match=r"lacks the columns \['p_0'\]"):
        probhook.load(tmp_path / "no-p.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not written by probhook"):
        probhook.load(tmp_path / "other.parquet")
    empty = tmp_path / "empty.arrows.partial.arrows"  # a run killed before its first row
    empty.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="holds no row yet"):
        assert len(probhook.load(empty)) == 0
    with pytest.raises(ValueError, match="holds no row yet"):
        probhook.load(empty, strict=True)


def test_a_model_in_training_mode_with_dropout_is_warned_about():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    with pytest.warns(RuntimeWarning, match=r"training mode with Dropout active.*model\.eval\(\)"):
        capture_probs(model).start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with capture_probs(model.eval()):  # eval mode: no warning
            model(torch.randn(1, 4))
