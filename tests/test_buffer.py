import pickle
import threading
import tracemalloc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probhook.block import INT_NA
from probhook.buffer import BufferFullError, ProbBuffer
from probhook.sink import SinkError
from probhook.testing import CollectingSink
from probhook.writer import Writer

C = 3


def rows(start, n):
    """Rows whose values encode their global index, so order and tearing are checkable."""
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(C, axis=1)


ops = st.lists(
    st.one_of(st.just(("one", 1)), st.tuples(st.just("batch"), st.integers(0, 25))),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 17), ops=ops)
def test_wraparound_matches_reference(capacity, ops):
    buf = ProbBuffer(C, capacity, columns={"page": "int"})
    reference, heads, pages, total = [], [], [], 0
    for kind, n in ops:
        if kind == "one":  # queued, unless an extra column is given
            if total % 2:
                buf.append(rows(total, 1)[0], key=f"k{total}", page=total)
            else:
                buf.append(rows(total, 1)[0], key=f"k{total}")
        else:  # a head shared by the batch, changing now and then
            idx = list(range(total, total + n))
            buf.append_batch(rows(total, n), keys=[f"k{i}" for i in idx], head=f"h{total // 20}")
        reference.extend(range(total, total + n))
        heads.extend([None if kind == "one" else f"h{total // 20}"] * n)
        pages.extend([total if kind == "one" and total % 2 else None] * n)
        total += n
    kept = reference[-capacity:] if reference else []
    pages = pages[-capacity:] if pages else []
    assert buf.column("head").tolist() == (heads[-capacity:] if heads else [])
    assert len(buf) == len(kept)
    assert buf.evicted == total - len(kept)
    np.testing.assert_array_equal(buf.probs[:, 0], np.array(kept, dtype=np.float32))
    assert buf.seq.tolist() == kept
    assert buf.keys == [f"k{i}" for i in kept]
    assert [r.meta["page"] for r in buf] == pages
    assert [r.seq for r in buf.tail(3)] == kept[-3:]
    if kept:
        assert buf.lookup(f"k{kept[-1]}").seq == kept[-1]
        assert buf.lookup(f"k{kept[0]}").meta["page"] == pages[0]


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(1, 12),
    sizes=st.lists(st.integers(0, 30), max_size=20),
    chunk=st.integers(1, 8),
)
def test_a_sink_gets_every_row_once_in_order(capacity, sizes, chunk):
    sink = CollectingSink()
    buf = ProbBuffer(C, capacity, sink=sink, flush_rows=chunk)
    total = 0
    for n in sizes:
        buf.append_batch(rows(total, n), keys=[str(i) for i in range(total, total + n)])
        total += n
        # write-ahead: every row appended so far has reached the sink, once, in order
        assert sink.seq == list(range(total))
        buf.append(rows(total, 1)[0], key=str(total))  # single rows wait at most `chunk`
        total += 1
        assert len(sink.seq) >= total - chunk
    buf.flush()
    assert sink.seq == list(range(total))
    written = np.concatenate([b.probs[:, 0] for b in sink.blocks]) if sink.blocks else []
    np.testing.assert_array_equal(written, np.arange(total, dtype=np.float32))
    assert [k for b in sink.blocks for k in b.columns["key"]] == [str(i) for i in range(total)]
    assert buf.seq.tolist() == list(range(total))[-capacity:]


def test_a_sink_gets_single_rows_in_chunks():
    sink = CollectingSink()
    buf = ProbBuffer(C, 100, sink=sink)
    for i in range(1000):
        buf.append(rows(i, 1)[0])
    buf.flush()
    assert min(len(b) for b in sink.blocks) >= 25, "single appends must not write single rows"
    assert sink.seq == list(range(1000))


def test_error_policy_names_capacity_and_keeps_state():
    buf = ProbBuffer(C, 4, on_overflow="error")
    buf.append_batch(rows(0, 3))
    with pytest.raises(BufferFullError, match=r"capacity=4.*raise capacity="):
        buf.append_batch(rows(3, 2))
    assert len(buf) == 3
    assert buf.seq.tolist() == [0, 1, 2]


def test_removed_spill_policy_and_capacity_are_validated():
    with pytest.raises(ValueError, match=r"'spill' is gone.*needs sink= alone"):
        ProbBuffer(C, 4, on_overflow="spill")
    with pytest.raises(ValueError, match="exactly one of capacity"):
        ProbBuffer(C)
    with pytest.raises(ValueError, match="holds no row"):
        ProbBuffer(C, max_bytes=3)
    with pytest.raises(ValueError, match="on_overflow"):
        ProbBuffer(C, 4, on_overflow="drop")


def test_max_bytes_derives_capacity_and_nbytes_is_real():
    tracemalloc.start()
    buf = ProbBuffer(10, max_bytes=1_000_000, columns={"page_number": "int", "doc": "str"})
    allocated = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert buf.nbytes <= 1_000_000 < buf.nbytes + buf.row_nbytes
    assert abs(buf.nbytes - buf.capacity * buf.row_nbytes) <= 32  # table slots round down
    assert 0 <= allocated - buf.nbytes < 10_000  # what it reports is what it holds
    assert ProbBuffer(10, 8, dtype="float16").nbytes < ProbBuffer(10, 8, dtype="float64").nbytes


def test_wrong_width_and_dtype_are_clear_errors():
    buf = ProbBuffer(C, 4)
    with pytest.raises(ValueError, match=r"n_classes=3, got \(4,\)"):
        buf.append(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"\(n, n_classes\)"):
        buf.append_batch(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="floating point"):
        buf.append(np.zeros(3, np.int64))
    with pytest.raises(KeyError, match="unknown column 'page'"):
        buf.append(np.zeros(3, np.float32), page=1)
    with pytest.raises(ValueError, match="2 values for 3 rows"):
        buf.append_batch(np.zeros((3, 3), np.float32), keys=["a", "b"])


def test_non_finite_rows_are_kept_and_flagged():
    buf = ProbBuffer(C, 4, keep_logits=True)
    bad = np.array([np.nan, 0.5, 0.5], np.float32)
    buf.append(bad, logits=np.array([np.nan, 0, 0], np.float32))
    buf.append(np.array([0.0, 0.5, 0.5], np.float32), logits=np.array([-np.inf, 0, 0], np.float32))
    assert buf.finite.tolist() == [False, True]  # -inf logit is a valid (masked) class
    assert np.isnan(buf.probs[0, 0])


def test_int_columns_mark_missing_values():
    buf = ProbBuffer(C, 4, columns={"page_number": "int"})
    buf.append(np.zeros(3, np.float32), page_number=None)
    assert buf.column("page_number")[0] == INT_NA
    assert next(iter(buf)).meta["page_number"] is None


def test_threads_lose_no_row_and_never_tear_one():
    buf = ProbBuffer(4, 80_000)
    n_threads, per_thread = 8, 10_000

    def work(t):
        for i in range(per_thread):
            value = float(t * per_thread + i)
            buf.append(np.full(4, value, np.float32), key=t)

    seen = []

    def read():  # reads store the queue while appends go on without the lock
        while any(t.is_alive() for t in threads):
            latest = buf.tail(64)
            seen.append((latest.seq.tolist(), (latest.probs == latest.probs[:, :1]).all()))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    reader = threading.Thread(target=read)
    for t in threads:
        t.start()
    reader.start()
    for t in threads:
        t.join()
    reader.join()
    assert seen, "the reader ran while appends went on"
    assert all(untorn and seq == sorted(seq) for seq, untorn in seen)
    probs = buf.probs
    assert len(buf) == n_threads * per_thread
    assert buf.evicted == 0
    assert (probs == probs[:, :1]).all(), "a row mixes values from two appends"
    assert sorted(probs[:, 0].astype(int).tolist()) == list(range(n_threads * per_thread))
    assert buf.seq.tolist() == list(range(n_threads * per_thread))
    for t in range(n_threads):  # each thread's rows keep that thread's order
        mine = probs[np.array(buf.keys) == t, 0]
        assert (np.diff(mine) > 0).all()


@pytest.mark.parametrize("path", ["batch", "hook rows"])
def test_memory_is_flat_after_warm_up(path):
    capacity, per_batch = 10_000, 100
    buf = ProbBuffer(16, capacity, columns={"page_number": "int"})
    batch = np.random.default_rng(0).random((per_batch, 16), dtype=np.float32)

    def run(n_rows, offset):
        for i in range(offset, offset + n_rows, per_batch):
            # unique keys of equal length, as page ids are: the worst case for a key column
            keys = [f"page-{i + j:012d}" for j in range(per_batch)]
            if path == "batch":
                buf.append_batch(batch, keys=keys, page_number=i)
            else:
                for row, key in zip(batch, keys, strict=True):
                    buf.append(row, key=key, head="head", meta={"page_number": i})
        len(buf)  # stores the queued rows

    def peak(offset):
        # the key table frees slots in rounds, so compare the peaks of whole passes
        tracemalloc.reset_peak()
        run(capacity, offset)
        return tracemalloc.get_traced_memory()[1]

    tracemalloc.start()  # before warm-up, so that keys freed later are seen being freed
    run(2 * capacity, 0)
    before = peak(10**8)
    run(100 * capacity, 2 * 10**8)
    after = peak(3 * 10**8)
    tracemalloc.stop()
    assert after - before < 0.01 * buf.nbytes, (after - before, buf.nbytes)
    assert buf.keys[-1] == f"page-{3 * 10**8 + capacity - 1:012d}"


def test_keys_no_row_holds_are_released():
    class Key:  # hashable and weakly referable, unlike str
        def __init__(self, i):
            self.i = i

    buf = ProbBuffer(C, 8)
    refs = []
    for i in range(200):
        key = Key(i)
        refs.append(weakref.ref(key))
        buf.append_batch(rows(i, 1), keys=[key])
        del key
    assert [k.i for k in buf.keys] == list(range(192, 200))
    alive = sum(ref() is not None for ref in refs)
    assert 8 <= alive <= 10, "kept rows plus the table's two spare slots"
    assert buf.nbytes == ProbBuffer(C, 8).nbytes


def test_a_failing_sink_loses_no_row_and_reads_go_on():
    class FlakySink(CollectingSink):
        def write(self, rows):
            if self.failing:
                raise OSError("disk full")
            super().write(rows)

    sink = FlakySink(failing=True)
    buf = ProbBuffer(C, 4, sink=sink, flush_rows=1)
    with pytest.raises(SinkError, match=r"1 rows \(seq 0\.\.0\).*disk full"):
        buf.append(rows(0, 1)[0])  # the row is queued, and storing it needs the sink
    assert len(buf) == 0  # reads go on, with the rows already stored
    with pytest.raises(SinkError, match="disk full"):
        buf.append_batch(rows(1, 2))  # queued rows come first: nothing is written past them
    with pytest.raises(SinkError):
        buf.flush()
    sink.failing = False
    buf.append(rows(1, 1)[0])
    buf.flush()
    assert sink.seq == [0, 1]
    assert buf.probs[:, 0].tolist() == [0, 1]


def test_single_rows_are_stored_in_call_order_across_heads_and_paths():
    counter = Writer()
    a = ProbBuffer(C, 10, writer=counter)
    b = ProbBuffer(C, 10, writer=counter)
    a.append(rows(0, 1)[0], key="a0")  # queued
    b.append(rows(1, 1)[0].astype(np.float64), key="b1")  # converted, written at once
    a.append(rows(2, 1)[0], key="a2", head="h")  # queued
    b.append(rows(3, 1)[0], key="b3")  # queued
    assert a.seq.tolist() == [0, 2]
    assert b.seq.tolist() == [1, 3]
    assert b.keys == ["b1", "b3"]
    assert a.column("head").tolist() == [None, "h"]


def test_pickle_round_trip():
    buf = ProbBuffer(C, 5, labels=["a", "b", "c"], columns={"page_number": "int"})
    buf.append_batch(rows(0, 7), keys=list("abcdefg"), head="h", page_number=list(range(7)))
    clone = pickle.loads(pickle.dumps(buf))
    np.testing.assert_array_equal(clone.probs, buf.probs)
    assert clone.keys == buf.keys
    assert clone.labels == buf.labels
    assert clone.evicted == 2
    assert clone.column("head").tolist() == ["h"] * 5
    clone.append(rows(7, 1)[0], key="h")  # lock and counter work after unpickling
    assert clone.seq.tolist() == [3, 4, 5, 6, 7]


def test_merge_orders_by_sequence_number():
    counter = Writer()  # as the heads of one capture share one
    a = ProbBuffer(C, 10, labels="xyz", writer=counter)
    b = ProbBuffer(C, 10, labels="xyz", writer=counter)
    a.append(rows(0, 1)[0], key="a0")
    b.append(rows(1, 1)[0], key="b1")
    a.append(rows(2, 1)[0], key="a2")
    merged = ProbBuffer.merge(pickle.loads(pickle.dumps(b)), a)
    assert merged.keys == ["a0", "b1", "a2"]
    assert merged.seq.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(merged.probs[:, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="different label spaces"):
        ProbBuffer.merge(a, ProbBuffer(C, 10))
