"""The write path's edges: files whose values change type, reruns onto finished files, killed
streams, two writers of one path, bad column values and names, Ctrl-C mid-write, a removed
folder, memory at close, a start that fails half-way."""

import _thread
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import probhook
from probhook import capture_probs
from probhook.sink import SinkBusyError, SinkError, SinkLostError
from probhook.testing import CollectingSink


def _forwards(cap, model, keys):
    for key in keys:
        if key is None:
            model(torch.randn(1, 4))  # a warm-up forward: no key
        else:
            with cap.key(key):
                model(torch.randn(1, 4))


@pytest.mark.parametrize("suffix", [".arrows", ".parquet"])
@pytest.mark.parametrize(
    "keys",
    [[None, 0, 1, 2, 3, 4], [0, 1, 2, "x", 3], ["a", None, 5, ("doc", 2)], [None, None, "p"]],
    ids=["none-then-int", "int-then-str", "mixed", "none-then-str"],
)
def test_every_row_reaches_the_file_whatever_its_key_types(tmp_path, suffix, keys):
    model = torch.nn.Linear(4, 3)
    path = tmp_path / f"run{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither closing nor loading may warn
        with capture_probs(model, sink=path, flush_rows=2) as cap:
            _forwards(cap, model, keys)
        loaded = probhook.load(path, strict=True)
    assert loaded.keys == keys == cap.keys
    np.testing.assert_array_equal(loaded.probs, cap.probs)


def test_a_rerun_killed_onto_a_finished_file_is_never_read_as_the_newer_run(tmp_path):
    path = tmp_path / "run.parquet"
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=path) as cap:
        _forwards(cap, model, ["first-run"])
    proc, _ = _child(path, "with cap.key('second-run'):\n    model(x)\n")
    assert proc.stdout.readline().strip() == "paused"
    time.sleep(0.6)  # past flush_seconds: the row is in the stream
    proc.kill()
    proc.wait()
    with pytest.warns(RuntimeWarning, match=r"earlier run.*run\.parquet\.partial\.arrows.*killed"):
        assert probhook.load(path).keys == ["first-run"]
    with pytest.raises(ValueError, match="earlier run"):
        probhook.load(path, strict=True)
    with pytest.warns(RuntimeWarning, match="no end-of-stream marker"):
        assert probhook.load(tmp_path / "run.parquet.partial.arrows").keys == ["second-run"]
    with pytest.raises(FileExistsError, match=r"did not finish.*move or remove it"):
        capture_probs(model, sink=path).start()  # the killed run's rows are never overwritten


def test_a_run_that_writes_nothing_leaves_an_earlier_file_as_it_was(tmp_path):
    path = tmp_path / "run.arrows"
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=path) as cap:
        _forwards(cap, model, ["kept"])
    before = path.read_bytes()
    with (
        pytest.warns(RuntimeWarning, match="no row was written.*earlier run's"),
        capture_probs(model, sink=path),
    ):
        pass
    assert path.read_bytes() == before
    assert not (tmp_path / "run.arrows.partial.arrows").exists()


def _child(path, body, *, flush_seconds=0.2):
    script = textwrap.dedent(f"""
        import sys, time, torch
        from probhook import capture_probs
        model = torch.nn.Linear(4, 3)
        x = torch.randn(1, 4)
        with capture_probs(model, sink={str(path)!r}, flush_seconds={flush_seconds}) as cap:
    """) + textwrap.indent(body + 'print("paused", flush=True)\ntime.sleep(60)\n', "    ")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    return proc, path


def test_a_killed_arrows_run_warns_and_strict_refuses_it(tmp_path):
    path = tmp_path / "run.arrows"
    proc, _ = _child(path, "for i in range(5):\n    with cap.key(i):\n        model(x)\n")
    assert proc.stdout.readline().strip() == "paused"
    time.sleep(0.6)
    with pytest.warns(RuntimeWarning, match="never finished.*still writing"):
        assert probhook.load(path).keys == [0, 1, 2, 3, 4]  # the run is alive: said so
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.warns(RuntimeWarning, match=r"never finished \(the run that wrote it was killed"):
        assert probhook.load(path).keys == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="never finished"):
        probhook.load(path, strict=True)
    with pytest.raises(ValueError, match="no end-of-stream marker"):
        probhook.load(tmp_path / "run.arrows.partial.arrows", strict=True)


def test_one_writer_per_path_in_this_process_and_across_processes(tmp_path):
    path = tmp_path / "run.parquet"
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=path) as first:
        model(torch.randn(1, 4))
        second = capture_probs(torch.nn.Linear(4, 3), sink=path)
        with pytest.raises(SinkBusyError, match=r"run\.parquet is being written by another"):
            second.start()
        assert not second.active
    assert len(probhook.load(path)) == len(first) == 1
    other = tmp_path / "other.arrows"
    proc, _ = _child(other, "model(x)\n")
    assert proc.stdout.readline().strip() == "paused"
    with pytest.raises(SinkBusyError, match=r"other\.arrows is being written by another"):
        capture_probs(model, sink=other).start()
    proc.terminate()
    proc.wait()


def test_a_value_of_another_type_is_refused_where_it_is_given(tmp_path):
    path = tmp_path / "run.parquet"
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=path) as cap:
        with cap.key("p1", page=1):
            model(torch.randn(1, 4))
        with (
            pytest.raises(TypeError, match=r"column 'page' holds ints.*'2a'"),
            cap.key("p2", page="2a"),
        ):
            model(torch.randn(1, 4))
        with (
            pytest.raises(TypeError, match=r"must be str, int or tuples.*PosixPath"),
            cap.key(tmp_path),
        ):
            pass
        with pytest.raises(TypeError, match=r"column 'doc'.*PosixPath"), cap.key("p", doc=tmp_path):
            pass
        with cap.key("p3", page=3):
            model(torch.randn(1, 4))
    assert cap.keys == ["p1", "p3"]
    assert probhook.load(path).column("page").tolist() == [1, 3]


@pytest.mark.parametrize(
    "name",
    ["confidence", "predicted", "finite", "p_x", "logit_x", "seq", "head", "keys", "logits",
     "rows", "entropy", "margin", "status"],
)  # fmt: skip
def test_probhooks_own_column_names_are_refused_at_key(name):
    model = torch.nn.Linear(4, 3)
    with capture_probs(model) as cap:
        refused = pytest.raises(ValueError, match=f"column '{name}' is one of probhook's own")
        with refused, cap.key("k", **{name: 1}):
            pass
        model(torch.randn(1, 4))  # the capture goes on
    assert len(cap) == 1


def test_ctrl_c_while_blocks_are_written_leaves_every_row_once(tmp_path):
    """Interrupts land anywhere: in a forward, a drain, a block being written. Each row is in
    the file once and in memory once, or in neither."""
    path = tmp_path / "run.arrows"
    model = torch.nn.Linear(4, 64)
    rng = random.Random(0)
    stop, armed = threading.Event(), threading.Event()

    def interrupt():  # one at a time, each only once the loop is back inside its ``try``
        while armed.wait() and not stop.wait(rng.uniform(0.0002, 0.003)):
            armed.clear()
            _thread.interrupt_main()

    cap = capture_probs(model, sink=path, flush_rows=3, capacity=100_000)
    cap.start()
    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    interrupted = i = 0
    while True:
        try:
            armed.set()
            while i < 3000:
                with cap.key(i):
                    model(torch.randn(8, 4) if i % 5 == 0 else torch.randn(1, 4))
                if i % 7 == 0:
                    cap.flush()
                i += 1
            stop.set()
            # A simulated Ctrl-C does not wake a blocking join: poll, and re-arm so that a
            # thread that has just interrupted sees ``stop``; a late interrupt lands in the try.
            while thread.is_alive():
                armed.set()
                thread.join(0.01)
            break
        except KeyboardInterrupt:
            interrupted += 1
            i += 1
    cap.close()
    assert interrupted > 50
    loaded = probhook.load(path, strict=True)
    seq = loaded.buffer.seq.tolist()
    assert len(seq) == len(set(seq)), "a row written twice"
    assert seq == cap.buffer.seq.tolist()
    assert loaded.keys == cap.keys
    np.testing.assert_array_equal(loaded.probs, cap.probs)


@pytest.mark.parametrize("suffix", [".arrows", ".parquet"])
def test_a_removed_folder_says_what_was_lost_and_what_is_kept(tmp_path, suffix):
    folder = tmp_path / "out"
    path = folder / f"run{suffix}"
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=path, flush_rows=1)
    cap.start()
    for _ in range(3):
        model(torch.randn(1, 4))
    cap.flush()
    shutil.rmtree(folder)
    with pytest.raises(
        SinkLostError, match=r"removed.*3 rows written so far are gone.*memory only"
    ):
        model(torch.randn(2, 4))  # a batch: written now
    model(torch.randn(1, 4))  # later rows are kept in memory, not refused for ever
    cap.flush()
    with pytest.raises(SinkLostError, match=f"run{suffix} will not be written"):
        cap.close()
    cap.close()  # said once: closing again is quiet
    assert len(cap) == 6
    assert not folder.exists()


def test_memory_at_close_does_not_grow_with_the_rows_of_the_run(tmp_path):
    def peak_during_close(n):
        script = textwrap.dedent(f"""
            import numpy as np, pyarrow as pa
            from probhook import ProbBuffer
            from probhook.sink import FileSink
            sink = FileSink({str(tmp_path / f"rows{n}.parquet")!r})
            buf = ProbBuffer(4, 1000, sink=sink)
            rows = np.random.default_rng(0).dirichlet(np.ones(4), 10_000).astype(np.float32)
            for i in range({n} // 10_000):
                buf.append_batch(rows, keys=[f"p{{i}}-{{j}}" for j in range(10_000)])
            pool = pa.default_memory_pool()
            before = pool.max_memory()
            sink.close()
            print(pool.max_memory() - before, pa.total_allocated_bytes())
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        return int(out.split()[0])

    small, large = peak_during_close(100_000), peak_during_close(800_000)
    assert large < 24 * 2**20, f"closing 800k rows raised Arrow's peak by {large / 2**20:.0f} MiB"
    assert large - small < 4 * 2**20, (small, large)
    assert len(probhook.load(tmp_path / "rows800000.parquet")) == 800_000


def test_a_start_that_fails_half_way_leaves_no_thread_and_no_file(tmp_path):
    def flushing():
        return sum(t.name == "probhook-flush" for t in threading.enumerate())

    path = tmp_path / "run.parquet"
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=path, labels=["a", "b"])  # 3 outputs: refused at start
    before = flushing()
    with pytest.raises(ValueError, match="3 outputs but 2 labels"):
        cap.start()
    assert flushing() == before
    assert list(tmp_path.iterdir()) == []  # no stream left behind, and its lock released
    model.register_forward_hook(lambda *a: None).remove()
    assert not model._forward_hooks
    with capture_probs(model, sink=path) as again:  # the path is free
        model(torch.randn(1, 4))
    assert len(probhook.load(path)) == len(again) == 1


def test_flush_is_public_and_writes_what_waits(tmp_path):
    path = tmp_path / "run.arrows"
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=path, flush_seconds=60) as cap:
        model(torch.randn(1, 4))
        for _ in range(4):
            model(torch.randn(1, 4))  # queued
        cap.flush()
        partial = tmp_path / "run.arrows.partial.arrows"
        with pytest.warns(RuntimeWarning, match="still writing"):
            assert len(probhook.load(partial)) == 5
    assert os.path.exists(path)


def test_a_parquet_close_that_failed_finishes_when_called_again(tmp_path):
    path = tmp_path / "run.parquet"
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=path)
    cap.start()
    model(torch.randn(5, 4))
    (tmp_path / "run.parquet.tmp").mkdir()  # the conversion's file cannot be made
    with pytest.raises(SinkError, match=r"call close\(\) again"):
        cap.close()
    # the with block's close failed; the stream is complete and still locked
    assert not path.exists()
    (tmp_path / "run.parquet.tmp").rmdir()
    cap.close()
    assert len(probhook.load(path, strict=True)) == 5
    assert not (tmp_path / "run.parquet.partial.arrows").exists()


@pytest.mark.parametrize("options", [{}, {"keep_logits": True}, {"on_overflow": "error"}])
def test_a_tuple_key_or_value_is_one_value_for_every_row_of_a_forward(tmp_path, options):
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=tmp_path / "run.arrows", **options) as cap:
        for n in (3, 1, 2):  # the head's first forward, a single row, a batch
            with cap.key(("doc", n), part=("a", n)):
                model(torch.randn(n, 4))
    expected = [("doc", 3)] * 3 + [("doc", 1)] + [("doc", 2)] * 2
    assert cap.keys == probhook.load(tmp_path / "run.arrows").keys == expected
    assert cap.column("part").tolist() == [(a, n) for _, n in expected for a in ["a"]]


def test_a_head_whose_width_changes_is_refused_in_that_forward(tmp_path):
    class Head(torch.nn.Module):
        def forward(self, x, k):
            return x[:, :k]

    head = Head()
    with capture_probs(head, sink=tmp_path / "run.arrows") as cap:
        head(torch.randn(1, 5), 3)
        with pytest.raises(ValueError, match=r"shape \(1, 2\) cannot join a buffer of 3 classes"):
            head(torch.randn(1, 5), 2)
        with pytest.raises(ValueError, match=r"shape \(2, 4\) cannot join"):
            head(torch.randn(2, 5), 4)
        head(torch.randn(1, 5), 3)  # the capture goes on
    assert len(cap) == len(probhook.load(tmp_path / "run.arrows")) == 2


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"page": 2**63}, "64-bit ints"),
        ({"page": -(2**63)}, "64-bit ints"),
        ({"doc": "bad\udc80name"}, "lone surrogate"),
        ({"doc": ("ok", "\ud800")}, "lone surrogate"),
    ],
)
def test_values_a_file_cannot_hold_are_refused_where_they_are_given(tmp_path, given, error):
    model = torch.nn.Linear(4, 3)
    with capture_probs(model, sink=tmp_path / "run.parquet") as cap:
        with cap.key("k0", page=1, doc="a"):
            model(torch.randn(1, 4))
        with pytest.raises((TypeError, ValueError), match=error), cap.key("k1", **given):
            pass
        with pytest.raises(ValueError, match="lone surrogate"), cap.key("\ud800"):
            pass
        with cap.key("k2", page=2, doc="b"):
            model(torch.randn(1, 4))
    assert probhook.load(tmp_path / "run.parquet").keys == ["k0", "k2"]


def test_a_removed_folder_is_said_during_the_run_when_the_flush_thread_finds_it(tmp_path):
    folder = tmp_path / "out"
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=folder / "run.arrows", flush_seconds=0.05)
    cap.start()
    model(torch.randn(1, 4))
    shutil.rmtree(folder)
    model(torch.randn(1, 4))  # queued: the flush thread writes it, and finds the file gone
    time.sleep(0.5)
    with pytest.raises(SinkLostError, match="gone from disk"):
        cap.flush()
    cap.flush()  # said once
    with pytest.raises(SinkLostError):
        cap.close()
    assert len(cap) == 2


def test_each_head_gets_its_file_at_start_in_the_same_order_every_run(tmp_path):
    def run(first):
        a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
        with capture_probs([a, b], sink=tmp_path / "x.parquet") as cap:
            assert sorted(p.name for p in tmp_path.glob("*.partial.arrows")) == [
                "x.model1.parquet.partial.arrows", "x.parquet.partial.arrows",
            ]  # fmt: skip
            (b if first == "b" else a)(torch.randn(1, 4))
            (a if first == "b" else b)(torch.randn(1, 4))
        return cap

    for first in ("a", "b"):
        run(first)
        assert probhook.load(tmp_path / "x.parquet").labels == ("0", "1")
        assert probhook.load(tmp_path / "x.model1.parquet").labels == ("0", "1", "2")
    (tmp_path / "x.model1.parquet.partial.arrows").write_bytes(b"rows of a killed run")
    with pytest.raises(FileExistsError, match=r"x\.model1\.parquet\.partial\.arrows holds"):
        capture_probs(
            [torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)], sink=tmp_path / "x.parquet"
        ).start()
    assert not (tmp_path / "x.parquet.partial.arrows").exists()  # the start was undone


def test_a_sink_that_reads_its_capture_gets_a_clear_error():
    from probhook.sink import SinkReentryError

    class Progress(CollectingSink):
        reads = True

        def write(self, rows):
            if self.reads:
                print(len(cap))
            super().write(rows)

    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=Progress())
    cap.start()
    with pytest.raises(SinkReentryError, match="inside its own sink's write"):
        model(torch.randn(2, 4))
    cap.sink.reads = False
    cap.stop()  # the rows were kept
    assert cap.sink.seq == [0, 1]


def test_a_stream_moved_away_mid_run_is_said_once_at_close(tmp_path):
    path = tmp_path / "run.arrows"
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=path)
    cap.start()
    model(torch.randn(3, 4))
    os.rename(tmp_path / "run.arrows.partial.arrows", tmp_path / "moved.arrows")
    with pytest.raises(SinkLostError, match=r"moved, removed or replaced.*3 rows are wherever"):
        cap.close()
    cap.close()
    assert not path.exists()
    with pytest.warns(RuntimeWarning, match="no end-of-stream marker"):
        assert len(probhook.load(tmp_path / "moved.arrows")) == 3
