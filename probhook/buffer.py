"""A bounded, preallocated ring buffer of probability rows with per-row metadata.

>>> import numpy as np
>>> from probhook import ProbBuffer
>>> buf = ProbBuffer(3, capacity=2, labels=["a", "b", "c"])
>>> buf.append_batch(np.eye(3, dtype=np.float32), keys=["p1", "p2", "p3"])
>>> len(buf), buf.evicted, buf.keys
(2, 1, ['p2', 'p3'])
>>> buf.lookup("p3").probs
array([0., 0., 1.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from probhook.columns import Columns, Same
from probhook.rows import ENTRY, ColumnKind, Row, Rows, SeqCounter, Sink

OverflowPolicy = Literal["overwrite", "error", "spill"]

QUEUE_ROWS = 1024
"""Single rows wait in a queue of at most this many (fewer for wide rows, at most 256 KiB of row
data; with ``on_overflow="spill"`` at most one spill chunk) and are then stored as one block."""

_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


class BufferFullError(RuntimeError):
    """Raised by ``on_overflow="error"`` when an append would exceed the capacity."""


class ProbBuffer:
    """Fixed-capacity struct-of-arrays store for ``(n_classes,)`` probability rows.

    Args:
        n_classes: row width.
        capacity: rows kept; or give ``max_bytes`` and the row count is derived from it.
        labels: class names in column order (default ``"0" .. "C-1"``).
        dtype: ``"float32"`` (default), ``"float16"`` or ``"float64"`` for the probabilities.
        columns: extra metadata columns, name -> ``"int"`` or ``"str"`` (``key`` and ``head``
            always exist; ``"str"`` columns hold any value, stored once in a table).
        on_overflow: ``"overwrite"`` (oldest rows go, counted in ``evicted``), ``"error"``
            (raise :class:`BufferFullError`) or ``"spill"`` (rows go to ``sink`` before they are
            overwritten; :meth:`flush` writes the rest).
        keep_logits: also keep the raw float32 logits (doubles memory for float32 rows).
        seq_counter: share sequence numbers with other buffers (one per head of a capture).

    Single rows are queued (at most :data:`QUEUE_ROWS` of them, shared by the buffers of one
    counter) and stored as a block, so the per-row cost is one copy and a list append; every
    read stores the queue first, so reads always see every row appended before them.
    """

    def __init__(
        self,
        n_classes: int,
        capacity: int | None = None,
        *,
        max_bytes: int | None = None,
        labels: Sequence[str] | None = None,
        dtype: str = "float32",
        columns: Mapping[str, ColumnKind] | None = None,
        on_overflow: OverflowPolicy = "overwrite",
        sink: Sink | None = None,
        keep_logits: bool = False,
        seq_counter: SeqCounter | None = None,
        spill_chunk: int | None = None,
    ) -> None:
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        self.check_options(capacity, dtype)
        if on_overflow not in ("overwrite", "error", "spill"):
            raise ValueError(
                f"on_overflow must be 'overwrite', 'error' or 'spill', got {on_overflow!r}"
            )
        if on_overflow == "spill" and sink is None:
            raise ValueError("on_overflow='spill' needs a sink= that receives evicted rows")
        schema: dict[str, ColumnKind] = {"key": "str", "head": "str", **(columns or {})}
        self.labels = tuple(labels) if labels is not None else tuple(map(str, range(n_classes)))
        if len(self.labels) != n_classes:
            raise ValueError(f"{len(self.labels)} labels given for {n_classes} classes")
        self.n_classes, self.dtype = n_classes, np.dtype(_DTYPES[dtype])
        self.schema, self.keep_logits = schema, keep_logits
        self._row_shape = (n_classes,)
        self._extra = [n for n in schema if n not in ("key", "head")]
        # "error" must refuse a row when it is appended, so only the other policies queue
        self.fast_rows = on_overflow != "error" and not keep_logits
        self._queued_dtype = self.dtype if self.fast_rows else None
        self.capacity = self._resolve_capacity(capacity, max_bytes)
        self.on_overflow, self.sink = on_overflow, sink
        self.spill_chunk = spill_chunk or max(1, self.capacity // 4)
        rows = min(QUEUE_ROWS, max(16, 2**18 // (n_classes * self.dtype.itemsize)))
        if on_overflow == "spill":  # what a killed process loses: queue + buffer, not more
            rows = min(rows, self.spill_chunk)
        self._queue_limit = ENTRY * rows
        cap = self.capacity
        self._probs = np.zeros((cap, n_classes), dtype=self.dtype)
        self._logits = np.zeros((cap, n_classes), dtype=np.float32) if keep_logits else None
        self._seq = np.zeros(cap, dtype=np.int64)
        self._cols = Columns(schema, cap)
        self._start = self._size = self._evicted = self._unspilled = 0
        self._counter = seq_counter or SeqCounter()
        self._lock, self._queue = self._counter.lock, self._counter.queue

    @staticmethod
    def check_options(capacity: int | None, dtype: str) -> None:
        """Reject a bad capacity or dtype with a clear error (``None``: from ``max_bytes``)."""
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")

    def _resolve_capacity(self, capacity: int | None, max_bytes: int | None) -> int:
        if (capacity is None) == (max_bytes is None):
            raise ValueError("give exactly one of capacity= (rows) or max_bytes= (memory budget)")
        if capacity is None:
            assert max_bytes is not None
            capacity = (max_bytes - Columns.fixed_nbytes(self.schema)) // self.row_nbytes
            if capacity < 1:
                raise ValueError(
                    f"max_bytes={max_bytes} holds no row; one row takes {self.row_nbytes} bytes"
                )
        return capacity

    @property
    def row_nbytes(self) -> int:
        """Bytes one row occupies across all columns, its share of the value tables included."""
        per_class = self.dtype.itemsize + (4 if self.keep_logits else 0)
        return self.n_classes * per_class + 8 + Columns.row_nbytes(self.schema)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays and value tables."""
        arrays = [self._probs, self._seq] + ([] if self._logits is None else [self._logits])
        return sum(a.nbytes for a in arrays) + self._cols.nbytes

    @property
    def evicted(self) -> int:
        """Rows dropped from the buffer so far (overwritten or spilled)."""
        with self._lock:
            self._drain()
            return self._evicted

    def __len__(self) -> int:
        with self._lock:
            self._drain()
            return self._size

    def __repr__(self) -> str:
        return (
            f"ProbBuffer({len(self)}/{self.capacity} rows x {self.n_classes} classes, "
            f"evicted={self.evicted}, {self.nbytes / 2**20:.1f} MiB)"
        )

    # -- writing ------------------------------------------------------------------------------

    def append(
        self,
        row: npt.ArrayLike,
        *,
        key: Hashable | None = None,
        head: str | None = None,
        logits: npt.ArrayLike | None = None,
        **columns: Any,
    ) -> None:
        """Append one ``(n_classes,)`` row; ``columns`` name extra column values."""
        try:  # a row already in the buffer's dtype and shape is queued as its bytes
            if (
                row.dtype is self._queued_dtype  # type: ignore[union-attr]
                and row.shape == self._row_shape  # type: ignore[union-attr]
                and logits is None
                and not columns
            ):
                queue = self._queue
                queue.extend((self, row.tobytes(), key, head, None))  # type: ignore[union-attr]
                if len(queue) >= self._queue_limit:
                    self._drain_now()
                return
        except AttributeError:  # a list or another array-like
            pass
        probs = self._check(row, 1)
        lg = None if logits is None else self._check(logits, 1, "logits")[None]
        values = {"key": key, "head": head, **columns}  # a tuple key is one value, not a row each
        self._locked_write(probs[None], lg, {name: Same(v) for name, v in values.items()})

    def append_row(self, row: npt.NDArray[Any], meta: Mapping[str, Any] | None, head: Any) -> None:
        """The hot path for hooks (one page per forward): ``row`` is a float ``(n_classes,)``
        array; ``meta`` holds ``key`` and any extra column values (others are ignored) and is
        read when the row is stored, so it must not change afterwards.

        Only for buffers with :attr:`fast_rows`; others use :meth:`append_batch`.
        """
        if row.shape != self._row_shape:
            raise ValueError(f"row must have shape ({self.n_classes},), got {row.shape}")
        blob = (row if row.dtype is self.dtype else row.astype(self.dtype)).tobytes()
        queue = self._queue
        queue.extend((self, blob, None if meta is None else meta.get("key"), head, meta))
        if len(queue) >= self._queue_limit:
            self._drain_now()

    def append_batch(
        self,
        rows: npt.ArrayLike,
        *,
        keys: Hashable | Sequence[Hashable | None] | None = None,
        head: str | None = None,
        logits: npt.ArrayLike | None = None,
        **columns: Any,
    ) -> None:
        """Append ``(n, n_classes)`` rows in one vectorised copy.

        ``keys`` and each extra column are a single value for every row or one value per row.
        """
        probs = self._check(rows, 2)
        lg = None if logits is None else self._check(logits, 2, "logits")
        if lg is not None and lg.shape[0] != probs.shape[0]:
            raise ValueError(f"logits have {lg.shape[0]} rows, probabilities {probs.shape[0]}")
        self._locked_write(probs, lg, {"key": keys, "head": head, **columns})

    def _check(self, values: npt.ArrayLike, ndim: int, what: str = "rows") -> npt.NDArray[Any]:
        if type(values) is np.ndarray:
            arr = values
        elif hasattr(values, "detach"):
            arr = values.detach().cpu().numpy()
        else:
            arr = np.asarray(values)
        if arr.dtype.kind != "f":
            raise TypeError(f"{what} must be floating point, got dtype {arr.dtype}")
        if arr.ndim != ndim or arr.shape[-1] != self.n_classes:
            shape = "(n_classes,)" if ndim == 1 else "(n, n_classes)"
            raise ValueError(
                f"{what} must have shape {shape} with n_classes={self.n_classes}, got {arr.shape}"
            )
        return arr

    def _locked_write(
        self, probs: npt.NDArray[Any], logits: npt.NDArray[Any] | None, columns: Mapping[str, Any]
    ) -> None:
        with self._lock:
            self._drain()  # queued rows came first
            self._write(probs, logits, columns)

    def _drain_now(self) -> None:
        with self._lock:
            self._counter.drain()

    def _drain(self) -> None:
        """Store the queued single rows first, so that reads and writes come after them."""
        self._counter.drain()

    def store_queued(self, entries: list[Any], end: int, seq: npt.NDArray[np.int64]) -> None:
        """Store queued rows (see :class:`~probhook.rows.SeqCounter`); lock held."""
        blobs = b"".join(entries[1:end:ENTRY])
        probs = np.frombuffer(blobs, self.dtype).reshape(len(seq), self.n_classes)
        columns: dict[str, Any] = {"key": entries[2:end:ENTRY], "head": entries[3:end:ENTRY]}
        if self._extra:
            metas = entries[4:end:ENTRY]
            for name in self._extra:
                columns[name] = [None if meta is None else meta.get(name) for meta in metas]
        self._write(probs, None, columns, seq)

    def _write(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        columns: Mapping[str, Any],
        seq: npt.NDArray[np.int64] | None = None,
    ) -> None:
        n, cap = len(probs), self.capacity
        values = self._cols.prepare(columns, n)
        if self.keep_logits and logits is None:
            raise ValueError("this buffer keeps logits (keep_logits=True): pass logits=")
        if self.on_overflow == "error" and self._size + n > cap:
            raise BufferFullError(
                f"appending {n} rows to a buffer holding {self._size} of capacity={cap} "
                "would overflow; raise capacity= (or max_bytes=), or use "
                "on_overflow='overwrite' or 'spill'"
            )
        if n == 0:
            return
        # a fresh block's numbers are its first one: they are written without an arange
        numbers: int | npt.NDArray[np.int64] = self._counter.take(n) if seq is None else seq
        if n > cap:  # only the newest ``cap`` rows can stay
            if isinstance(numbers, int):
                numbers = np.arange(numbers, numbers + n, dtype=np.int64)
            if self.on_overflow == "spill":
                self._spill(self._size)
                assert self.sink is not None
                self.sink.write(self._block_rows(probs, logits, numbers, values, slice(0, n - cap)))
            self._evicted += self._size + n - cap
            self._start = self._size = self._unspilled = 0
            keep = slice(n - cap, n)
            probs, numbers, values = probs[keep], numbers[keep], Columns.slice(values, keep)
            logits = None if logits is None else logits[keep]
            n = cap
        overflow = max(0, self._size + n - cap)
        if overflow and self.on_overflow == "spill":
            spilled = self._size - self._unspilled
            if overflow > spilled:  # in chunks, so that the sink writes row groups
                self._spill(max(overflow - spilled, self.spill_chunk))
        self._store(probs, logits, numbers, values, n, overflow)
        self._evicted += overflow
        self._start = (self._start + overflow) % cap
        self._size += n - overflow
        self._unspilled = min(self._unspilled + n, self._size)

    def _store(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        numbers: int | npt.NDArray[np.int64],
        values: dict[str, Any],
        n: int,
        overflow: int,
    ) -> None:
        """Write ``n`` rows after the kept ones, wrapping around the end; the ``overflow``
        oldest rows are overwritten."""
        pos = (self._start + self._size) % self.capacity
        first = min(n, self.capacity - pos)
        parts = [(slice(pos, pos + first), slice(0, first))]
        if first < n:
            parts.append((slice(0, n - first), slice(first, n)))
        counting = _counting(n) if type(numbers) is int else None
        for dst, src in parts:
            self._probs[dst] = probs[src]
            if counting is None:
                self._seq[dst] = numbers[src]  # type: ignore[index]
            else:
                np.add(counting[src], numbers, out=self._seq[dst])
            if self._logits is not None:
                self._logits[dst] = logits[src]  # type: ignore[index]
        self._cols.store(values, parts, survivors=lambda: self._index(overflow))

    def _spill(self, n: int) -> None:
        """Write the ``n`` oldest rows not yet spilled to the sink; they stay readable."""
        spilled = self._size - self._unspilled
        n = min(n, self._unspilled)
        if n <= 0:
            return
        assert self.sink is not None
        self.sink.write(self._rows(self._index(spilled, spilled + n)))
        self._unspilled -= n

    def flush(self) -> None:
        """Spill every row not yet written to the sink (for ``on_overflow="spill"``)."""
        with self._lock:
            self._drain()
            if self.sink is not None:
                self._spill(self._unspilled)

    # -- reading ------------------------------------------------------------------------------

    def _index(self, lo: int = 0, hi: int | None = None) -> npt.NDArray[np.intp]:
        hi = self._size if hi is None else hi
        return (self._start + np.arange(lo, hi)) % self.capacity

    def _rows(self, idx: npt.NDArray[np.intp]) -> Rows:
        probs = self._probs[idx]
        logits = None if self._logits is None else self._logits[idx]
        columns = self._cols.read_all(idx)
        return Rows(probs, self._seq[idx], _finite(probs, logits), columns, self.labels, logits)

    def _block_rows(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        seq: npt.NDArray[np.int64],
        values: dict[str, Any],
        sl: slice,
    ) -> Rows:
        """Rows ``sl`` of a block that is being written, as reads return them."""
        probs, seq = probs[sl].astype(self.dtype), seq[sl]
        lg = None if logits is None else logits[sl]
        columns = self._cols.block(values, sl, len(seq))
        return Rows(probs, seq, _finite(probs, lg), columns, self.labels, lg)

    def rows(self) -> Rows:
        """All kept rows, oldest first (copies)."""
        with self._lock:
            self._drain()
            return self._rows(self._index())

    def latest(self, n: int) -> Rows:
        """The ``n`` newest rows, oldest of them first."""
        with self._lock:
            self._drain()
            return self._rows(self._index(max(0, self._size - n)))

    def _ordered(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One array's kept rows, oldest first: a single column is copied, not all of them."""
        with self._lock:
            self._drain()
            return array[self._index()]

    @property
    def probs(self) -> npt.NDArray[np.floating[Any]]:
        """Kept probabilities, oldest first (a copy)."""
        return self._ordered(self._probs)

    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """Kept logits (``keep_logits=True``), else None."""
        return None if self._logits is None else self._ordered(self._logits)

    @property
    def seq(self) -> npt.NDArray[np.int64]:
        """Global sequence numbers of the kept rows."""
        return self._ordered(self._seq)

    @property
    def finite(self) -> npt.NDArray[np.bool_]:
        """False where a row (or its logits) holds NaN or inf."""
        with self._lock:
            self._drain()
            idx = self._index()
            return _finite(self._probs[idx], None if self._logits is None else self._logits[idx])

    @property
    def keys(self) -> list[Any]:
        """The key of each kept row, oldest first."""
        return list(self.column("key"))

    def column(self, name: str) -> npt.NDArray[Any]:
        """One metadata column, oldest first."""
        if name not in self.schema:
            raise KeyError(f"unknown column {name!r}; this buffer has {sorted(self.schema)}")
        with self._lock:
            self._drain()
            return self._cols.read(name, self._index())

    def lookup(self, key: Hashable, column: str = "key") -> Row | None:
        """The most recent row whose ``column`` equals ``key``, or None."""
        if column not in self.schema:
            raise KeyError(f"unknown column {column!r}; this buffer has {sorted(self.schema)}")
        target = np.empty((), object)
        target[()] = key  # compared as one value, even a tuple
        with self._lock:
            self._drain()
            idx = self._index()
            hits = idx[self._cols.read(column, idx) == target]
            return None if len(hits) == 0 else self._rows(hits[-1:]).row(0)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    # -- persistence and merging ----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            self._drain()
            state = self.__dict__.copy()
        del state["_lock"], state["_queue"]  # the counter travels and brings fresh ones
        state["sink"] = None  # open files and writers do not travel between processes
        if state["on_overflow"] == "spill":
            state["on_overflow"] = "overwrite"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._queue = self._counter.lock, self._counter.queue

    @classmethod
    def merge(cls, *buffers: ProbBuffer, capacity: int | None = None) -> ProbBuffer:
        """One buffer with the rows of ``buffers`` ordered by sequence number.

        All buffers must share labels, dtype and columns. ``capacity`` defaults to the total row
        count; ties in sequence number (buffers from separate processes) keep argument order.
        """
        if not buffers:
            raise ValueError("merge needs at least one buffer")
        first = buffers[0]
        for other in buffers[1:]:
            if (other.labels, other.schema, other.dtype, other.keep_logits) != (
                first.labels,
                first.schema,
                first.dtype,
                first.keep_logits,
            ):
                raise ValueError(
                    "cannot merge buffers with different label spaces, columns, dtype or "
                    f"keep_logits: {first.labels} vs {other.labels}"
                )
        parts = [b.rows() for b in buffers]
        order = np.argsort(np.concatenate([p.seq for p in parts]), kind="stable")
        logits = [p.logits for p in parts if p.logits is not None]
        merged = Rows(
            np.concatenate([p.probs for p in parts])[order],
            np.concatenate([p.seq for p in parts])[order],
            np.concatenate([p.finite for p in parts])[order],
            {n: np.concatenate([p.columns[n] for p in parts])[order] for n in first.schema},
            first.labels,
            np.concatenate(logits)[order] if logits else None,
        )
        return cls.from_rows(merged, first.schema, capacity=capacity, dtype=str(first.dtype))

    @classmethod
    def from_rows(
        cls,
        rows: Rows,
        schema: Mapping[str, ColumnKind],
        *,
        capacity: int | None = None,
        dtype: str = "float32",
    ) -> ProbBuffer:
        """A buffer holding ``rows`` with their sequence numbers (merged or loaded data)."""
        extra = {k: v for k, v in schema.items() if k not in ("key", "head")}
        out = cls(
            rows.probs.shape[1],
            capacity or max(len(rows), 1),
            labels=rows.labels,
            dtype=dtype,
            columns=extra,
            keep_logits=rows.logits is not None,
            seq_counter=SeqCounter(int(rows.seq.max(initial=-1)) + 1),
        )
        with out._lock:
            out._write(rows.probs, rows.logits, dict(rows.columns), rows.seq)
        return out


def _finite(probs: npt.NDArray[Any], logits: npt.NDArray[Any] | None) -> npt.NDArray[np.bool_]:
    """Per-row finiteness, read from the stored values: NaN or inf anywhere in a row marks it;
    in logits, -inf is a masked class, so only NaN and +inf count."""
    finite: npt.NDArray[np.bool_] = np.isfinite(probs).all(axis=1)
    if logits is not None:
        finite &= ~(np.isnan(logits) | np.isposinf(logits)).any(axis=1)
    return finite


_COUNTING: list[npt.NDArray[np.int64]] = [np.arange(4096, dtype=np.int64)]


def _counting(n: int) -> npt.NDArray[np.int64]:
    """``0 .. n-1``, from one array shared by all buffers and grown for larger blocks (a
    block's sequence numbers are written as first + counting, with no temporary array)."""
    counting = _COUNTING[0]
    if len(counting) < n:
        counting = _COUNTING[0] = np.arange(n, dtype=np.int64)
    return counting
