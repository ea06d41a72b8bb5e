"""What docs/guarantees.md promises: no row lost or wrong without an error, at every edge."""

import asyncio
import os
import random
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
from probhook.arrow import read_table
from probhook.sink import SinkError
from probhook.testing import CollectingSink

TEXTS = ["dear sir invoice total", "memo to team meeting"]


# -- rows lost ---------------------------------------------------------------------------------


def _child(tmp_path, body, flush_seconds=0.2):
    path = tmp_path / "run.arrows"
    script = textwrap.dedent(f"""
        import sys, time, torch
        from probhook import capture_probs
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        x = torch.randn(1, 4)
        with capture_probs(model, sink={str(path)!r}, flush_seconds={flush_seconds}) as cap:
    """) + textwrap.indent(textwrap.dedent(body), "    ")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    return proc, path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_after_a_pause_the_file_holds_every_finished_forward(tmp_path, sig):
    n = random.Random(sig).randint(50, 3000)  # a random point, far below flush_rows or above
    proc, path = _child(
        tmp_path,
        f"""
        for i in range({n}):
            with cap.key(i):
                model(x * i)
        print("paused", flush=True)
        time.sleep(60)
        """,
    )
    assert proc.stdout.readline().strip() == "paused"
    time.sleep(0.2 * 3)  # longer than flush_seconds: no further forward comes
    os.kill(proc.pid, sig)
    proc.wait()
    loaded = probhook.load(path)
    assert loaded.keys == list(range(n))  # every row once, in order, keys keep their type
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(1, 4)
    with torch.no_grad():  # one forward per row, as the child ran them (a batched matmul
        # can round differently in the last bit)
        expected = np.concatenate([torch.softmax(model(x * i), -1).numpy() for i in range(n)])
    np.testing.assert_array_equal(loaded.probs, expected)  # bit-exact


def test_parquet_sink_of_a_killed_run_loads_from_its_stream(tmp_path):
    path = tmp_path / "run.parquet"
    script = textwrap.dedent(f"""
        import time, torch
        from probhook import capture_probs
        model = torch.nn.Linear(4, 3)
        with capture_probs(model, sink={str(path)!r}, flush_seconds=0.1):
            model(torch.randn(7, 4))
            print("paused", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "paused"
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    with pytest.warns(RuntimeWarning, match="never finished"):
        assert len(probhook.load(path)) == 7


def test_a_failed_close_loses_nothing_when_called_again():
    sink = CollectingSink(failing=True)
    sink.failing, sink.close_fails = False, True
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=sink, flush_seconds=60)
    cap.start()
    model(torch.randn(1, 4))  # the head's first row is written at once
    sink.failing = True  # the disk fills up
    for _ in range(49):
        model(torch.randn(1, 4))  # queued: written within flush_rows / flush_seconds
    with pytest.raises(SinkError, match=r"49 rows \(seq 1\.\.49\).*No space left"):
        cap.close()
    assert len(cap) == 1  # reads go on with what is stored; the 49 rows wait, not lost
    with pytest.raises(SinkError, match="No space left"):
        cap.close()  # still failing: still raised, still nothing lost
    sink.failing = False
    cap.close()
    assert sink.seq == list(range(50))
    assert sink.closed
    assert len(cap) == 50


def test_a_sink_failing_on_some_writes_raises_and_writes_the_rows_later():
    sink = CollectingSink(failing=True)
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=sink, flush_rows=5, flush_seconds=60)
    cap.start()
    with pytest.raises(SinkError, match=r"1 rows \(seq 0\.\.0\)"):
        model(torch.randn(1, 4))  # the head's first row is written at once
    for _ in range(4):
        model(torch.randn(1, 4))  # queued
    with pytest.raises(SinkError, match=r"1 rows \(seq 0\.\.0\)"):
        model(torch.randn(1, 4))  # the fifth queued row stores the queue: the oldest rows fail
    sink.failing = False
    cap.close()
    assert sink.seq == list(range(6))  # the rows of the forward that raised too, once


def test_forwards_racing_the_exit_reach_the_file(tmp_path):
    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            time.sleep(0.002)
            return self.linear(x)

    model = Slow()
    for attempt in range(20):
        path = tmp_path / f"run{attempt}.arrows"
        stop = threading.Event()

        def work(stop=stop):
            while not stop.is_set():
                model(torch.randn(1, 4))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with capture_probs(model, sink=path) as cap:
                thread = threading.Thread(target=work)
                thread.start()
                time.sleep(0.01)
        stop.set()
        thread.join()
        assert len(read_table(path)) == len(cap)  # in memory means in the file


def test_reentering_a_capture_whose_sink_closed_fails_at_entry(tmp_path):
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=tmp_path / "a.arrows")
    with cap:
        model(torch.randn(2, 4))
    with pytest.raises(RuntimeError, match="sink was closed"):
        cap.start()
    assert not cap.active


def test_meta_columns_are_kept_on_plain_modules():
    model = torch.nn.Linear(4, 3)
    with capture_probs(model) as cap, cap.key("doc-7", page=3, source="scan"):
        model(torch.randn(2, 4))
    assert cap.column("page").tolist() == [3, 3]
    assert cap.get("doc-7").meta == {"page": 3, "source": "scan"}
    assert cap.to_pandas()["page"].tolist() == [3, 3]
    with pytest.raises(ValueError, match="column 'late' is new"), cap.key("x", late=1):
        pass


@pytest.mark.parametrize("fmt", ["parquet", "arrows"])
def test_keys_keep_their_type_through_files(tmp_path, fmt):
    model = torch.nn.Linear(4, 3)
    with capture_probs(model) as cap:
        for key in (1, "1", 5, ("doc", 2)):
            with cap.key(key):
                model(torch.randn(1, 4))
    assert cap.to_pandas()["key"].tolist() == ["1", '"1"', "5", '{"tuple": ["doc", 2]}']
    path = cap.to_parquet(tmp_path / "k.parquet")
    assert probhook.load(path).keys == [1, "1", 5, ("doc", 2)]
    with capture_probs(model, sink=tmp_path / f"ints.{fmt}") as ints:
        for key in range(3):
            with ints.key(key):
                model(torch.randn(1, 4))
    loaded = probhook.load(tmp_path / f"ints.{fmt}")
    assert loaded.keys == [0, 1, 2]
    assert loaded.to_pandas()["key"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="keys must be str, int or tuples"), cap.key(object()):
        pass


@pytest.mark.parametrize("labels", [["a", "a", "b"], [1, "1", "x"]])
def test_duplicate_labels_are_refused_at_creation(labels):
    with pytest.raises(ValueError, match="labels must be distinct"):
        capture_probs(torch.nn.Linear(4, 3), labels=labels)


# -- rows wrong --------------------------------------------------------------------------------


class FeaturesAndLogits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        features = self.body(x)
        return features, self.head(features)


def test_tuple_outputs_need_an_unambiguous_logits_element():
    model = FeaturesAndLogits()
    with pytest.raises(TypeError, match=r"\(2, 8\).*\(2, 3\).*output="), capture_probs(model):
        model(torch.randn(2, 4))
    with capture_probs(model, output=1) as cap:
        _, logits = model(torch.randn(2, 4))
    np.testing.assert_allclose(cap.probs, torch.softmax(logits, -1).detach().numpy(), atol=1e-6)


def test_hf_loss_and_logits_tuple_gives_the_logits(tiny):
    t = tiny("bert")
    model = t.load_model()
    enc = t.load_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    with capture_probs(model) as cap:
        _loss, logits = model(**enc, labels=torch.tensor([0, 1]), return_dict=False)
    np.testing.assert_allclose(cap.probs, torch.softmax(logits, -1).detach().numpy(), atol=1e-6)


def test_one_output_heads_refuse_softmax_and_take_sigmoid():
    model = torch.nn.Linear(4, 1)
    with pytest.raises(ValueError, match=r"one output.*activation='sigmoid'"):
        capture_probs(model).start()

    class Functional(torch.nn.Module):
        def forward(self, x):
            return x[:, :1]

    functional = Functional()
    with pytest.raises(ValueError, match="one output"), capture_probs(functional, heads=""):
        functional(torch.randn(2, 4))
    with capture_probs(model, activation="sigmoid") as cap:
        out = model(torch.randn(3, 4))
    np.testing.assert_allclose(cap.probs, torch.sigmoid(out).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_bool_and_integer_outputs_are_refused(dtype):
    class Predictor(torch.nn.Module):
        def forward(self, x):
            return (x > 0).to(dtype)

    model = Predictor()
    with pytest.raises(TypeError, match="not floating"), capture_probs(model, heads=""):
        model(torch.randn(2, 3))


def test_a_selected_classifier_layer_keeps_the_models_labels(tiny):
    t = tiny("bert")
    model = t.load_model()
    enc = t.load_tokenizer()(TEXTS, padding=True, return_tensors="pt")
    with capture_probs(model, heads="classifier") as cap:
        model(**enc)
    assert cap.labels == t.labels


def test_non_finite_rows_have_no_prediction():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    x[1, 0] = float("nan")
    with capture_probs(model) as cap, cap.keys_for(["ok", "bad"]):
        model(x)
    assert cap.get("ok").predicted is not None
    assert cap.get("bad").predicted is None
    assert cap.flag().tolist() == [False, True]
    assert cap.to_pandas()["predicted"].isna().tolist() == [False, True]


def test_keys_for_labels_the_next_forward_only():
    model = torch.nn.Linear(4, 3)
    with capture_probs(model) as cap, cap.keys_for(["a", "b"]):
        model(torch.randn(2, 4))
        model(torch.randn(2, 4))
    assert cap.keys == ["a", "b", None, None]


def test_decorating_generators_and_coroutines():
    model = torch.nn.Linear(4, 3)

    @capture_probs(model)
    def stream(n):
        for _ in range(n):
            yield model(torch.randn(1, 4))

    @capture_probs(model)
    async def predict():
        await asyncio.sleep(0)
        return model(torch.randn(2, 4))

    assert len(list(stream(3))) == 3
    assert len(stream.capture) == 3
    asyncio.run(predict())
    assert len(predict.capture) == 2


def test_a_wrapper_alone_attributes_rows_to_pages(tiny):
    import deepdoctection as dd

    from probhook.testing import make_pages, make_service, run_pipe, wrapper_for

    wrapper = wrapper_for(tiny("layoutlm"))
    pipe = dd.DoctectionPipe(pipeline_component_list=[make_service(tiny("layoutlm"), wrapper)])
    with capture_probs(wrapper) as cap:
        pages = run_pipe(pipe, make_pages(3, n_documents=1))
    assert cap.keys == [p.image_id for p in pages]
    for page in pages:
        assert cap.get(page).predicted == page.document_type.value


def test_two_threads_capturing_one_model_are_warned():
    model = torch.nn.Linear(4, 3)
    first = capture_probs(model)
    first.start()
    caught = []

    def other():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with capture_probs(model):
                pass
        caught.extend(str(w.message) for w in seen)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    first.stop(warn=False)
    assert any("another thread" in c for c in caught)


# -- crashes and late errors ---------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [10**9, 10**12])
def test_capacities_no_machine_holds_fail_at_creation(capacity):
    with pytest.raises(MemoryError, match=f"capacity={capacity} needs"):
        capture_probs(torch.nn.Linear(4, 3), capacity=capacity)


def test_capacity_must_be_a_real_int():
    with pytest.raises(ValueError, match="capacity must be a positive int, got True"):
        capture_probs(torch.nn.Linear(4, 3), capacity=True)


def test_decorated_function_can_be_reentered_from_recursion_and_threads():
    model = torch.nn.Linear(4, 3)

    @capture_probs(model)
    def depth(n):
        model(torch.randn(1, 4))
        return 1 if n == 0 else 1 + depth(n - 1)

    assert depth(4) == 5
    threads = [threading.Thread(target=depth, args=(2,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(depth.capture) == 5 + 4 * 3
    assert not depth.capture.active


def test_unwritable_sink_fails_at_start_and_memory_stays_readable(tmp_path):
    model = torch.nn.Linear(4, 3)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        capture_probs(model, sink=blocker / "sub" / "run.arrows").start()
    (tmp_path / "dir.arrows").mkdir()
    with pytest.raises(IsADirectoryError):
        capture_probs(model, sink=tmp_path / "dir.arrows").start()
    sink = CollectingSink(failing=True)
    sink.failing = False
    cap = capture_probs(model, sink=sink, flush_seconds=60)
    cap.start()
    model(torch.randn(3, 4))
    sink.failing = True
    model(torch.randn(1, 4))
    assert len(cap) == 3  # reads go on; the new row waits for the sink
    assert cap.probs.shape == (3, 3)
    sink.failing = False
    assert len(cap) == 4
    cap.close()
    assert sink.seq == [0, 1, 2, 3]


def test_bad_options_fail_at_creation_naming_only_real_options():
    model = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="on_overflow must be one of"):
        capture_probs(model, on_overflow="drop")
    with pytest.raises(ValueError, match="needs sink="):
        capture_probs(model, on_overflow="spill")
    with pytest.raises(TypeError, match="unknown capture option 'max_bytes'"):
        capture_probs(model, max_bytes=10)
    cap = capture_probs(model, capacity=2, on_overflow="error")
    with pytest.raises(probhook.BufferFullError) as err, cap:
        model(torch.randn(3, 4))
    assert "max_bytes" not in str(err.value)


def test_damaged_files_say_what_was_recovered(tmp_path):
    model = torch.nn.Linear(4, 3)
    path = tmp_path / "run.arrows"
    with capture_probs(model, sink=path, flush_rows=4) as cap:
        for _ in range(12):
            model(torch.randn(1, 4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last block torn, as a kill leaves it
    with pytest.warns(RuntimeWarning, match=r"rows in \d+ complete blocks were recovered"):
        partial = probhook.load(path)
    assert 0 < len(partial) < 12
    with pytest.raises(ValueError, match="incomplete block"):
        probhook.load(path, strict=True)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"garbage\.parquet is not a readable Parquet file"):
        probhook.load(garbage)
    (tmp_path / "g.arrows").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not an Arrow stream"):
        probhook.load(tmp_path / "g.arrows")
    assert len(cap) == 12


def test_keys_belong_to_the_context_that_set_them():
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    model = torch.nn.Linear(4, 3)
    with capture_probs(model) as cap, cap.key("outer"), ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: model(torch.randn(1, 4)), range(2)))  # pool threads: no key
        context = contextvars.copy_context()
        pool.submit(context.run, model, torch.randn(1, 4)).result()  # the context travels
        model(torch.randn(1, 4))
    assert cap.keys == [None, None, "outer", "outer"]  # every thread's forward is captured
