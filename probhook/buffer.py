"""A bounded, preallocated ring buffer of probability rows with per-row metadata.

Examples:
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
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.block import ColumnKind, RowBlock
from probhook.column_store import Broadcast, ColumnStore
from probhook.distribution import Distribution
from probhook.options import (
    DTYPES,
    OVERFLOW_POLICIES,
    OverflowPolicy,
    capacity_for,
    check_capacity,
    check_choice,
)
from probhook.ring import Ring, check_rows
from probhook.sink import Sink, SinkError, write_to_sink
from probhook.write_queue import ENTRY, QueuedRows, WriteQueue

QUEUE_ROWS = 1000
"""Single rows wait in a queue of at most this many by default (fewer for wide rows: at most
256 KiB of row data) and are then stored, and written to the sink, as one block."""


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
            (raise [`BufferFullError`][BufferFullError]) or ``"spill"`` (every row is written to
            ``sink`` as it is stored, before it can be overwritten: the file holds every row, the
            buffer the newest ``capacity``).
        keep_logits: also keep the raw float32 logits (doubles memory for float32 rows).
        queue: share the write queue (sequence numbers, lock) with other buffers (one per head
            of a capture).
        flush_rows: single rows wait until this many are queued (or a read, a batch or
            [`flush`][flush] comes), then are stored, and written to the sink, as one block.

    Single rows are queued (shared by the buffers of one queue) and stored as a block, so the
    per-row cost is one copy and a list append; every read stores the queue first, so reads
    see every row appended before them.
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
        queue: WriteQueue | None = None,
        flush_rows: int = QUEUE_ROWS,
    ) -> None:
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        check_choice("dtype", dtype, DTYPES)
        check_choice("on_overflow", on_overflow, OVERFLOW_POLICIES)
        if on_overflow == "spill" and sink is None:
            raise ValueError("on_overflow='spill' needs a sink= that receives evicted rows")
        schema: dict[str, ColumnKind] = {"key": "str", "head": "str", **(columns or {})}
        self.labels = tuple(labels) if labels is not None else tuple(map(str, range(n_classes)))
        if len(self.labels) != n_classes:
            raise ValueError(f"{len(self.labels)} labels given for {n_classes} classes")
        self.n_classes, self.dtype = n_classes, np.dtype(dtype)
        self.schema, self.keep_logits = schema, keep_logits
        self._row_shape = (n_classes,)
        self._extra = [n for n in schema if n not in ("key", "head")]
        # "error" must refuse a row when it is appended, so only the other policies queue
        self._queued_dtype = self.dtype if on_overflow != "error" and not keep_logits else None
        fixed = ColumnStore.fixed_nbytes(schema)
        self.capacity = capacity_for(capacity, max_bytes, self.row_nbytes, fixed)
        self.on_overflow, self.sink = on_overflow, sink
        check_capacity(flush_rows)
        # single rows wait at most flush_rows (and 256 KiB of row data) before they are stored
        rows = min(flush_rows, max(16, 2**18 // (n_classes * self.dtype.itemsize)))
        self._queue_limit = ENTRY * rows
        self._ring = Ring(n_classes, self.capacity, self.dtype, schema, keep_logits)
        self._cols = self._ring.cols
        self._evicted = 0
        self._unwritten: list[tuple[Any, ...]] = []  # direct writes the sink refused, in order
        self._attach(queue or WriteQueue())

    def _attach(self, queue: WriteQueue) -> None:
        self._queue, self._push, self._pending = queue, queue.push, queue.pending

    @property
    def row_nbytes(self) -> int:
        """Bytes one row occupies across all columns, its share of the value tables included."""
        per_class = self.dtype.itemsize + (4 if self.keep_logits else 0)
        return self.n_classes * per_class + 8 + ColumnStore.row_nbytes(self.schema)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays and value tables."""
        return self._ring.nbytes

    @property
    def evicted(self) -> int:
        """Rows dropped from the buffer so far (overwritten or spilled)."""
        with self._queue.locked():
            return self._evicted

    def __len__(self) -> int:
        with self._queue.locked():
            return self._ring.size

    def __repr__(self) -> str:
        rows = f"{len(self)}/{self.capacity} rows x {self.n_classes} classes"
        return f"ProbBuffer({rows}, evicted={self.evicted}, {self.nbytes / 2**20:.1f} MiB)"

    # -- writing ------------------------------------------------------------------------------

    def append(
        self,
        row: npt.ArrayLike,
        key: Hashable | None = None,
        head: str | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        logits: npt.ArrayLike | None = None,
        **columns: Any,
    ) -> None:
        """Append one ``(n_classes,)`` row (what a hook calls). ``meta`` maps extra columns to
        values (others are ignored; read when the row is stored: do not change it after);
        ``columns`` name extra column values directly."""
        if columns:
            self._cols.check_names(columns)
            meta = {**(meta or {}), **columns}
        try:  # a row already in the buffer's dtype and shape is queued as its bytes
            if (
                row.dtype is self._queued_dtype  # type: ignore[union-attr]
                and row.shape == self._row_shape  # type: ignore[union-attr]
                and logits is None
            ):
                self._push((self, row.tobytes(), key, head, meta))  # type: ignore[union-attr]
                if len(self._pending) >= self._queue_limit:
                    self._queue.drain_now()
                return
        except AttributeError:  # a list or another array-like
            pass
        probs = check_rows(row, self.n_classes, 1)
        lg = None if logits is None else check_rows(logits, self.n_classes, 1, "logits")[None]
        values: dict[str, Any] = {n: Broadcast((meta or {}).get(n)) for n in self._extra}
        values.update(key=Broadcast(key), head=Broadcast(head))  # a tuple key is one value
        with self._queue.locked(strict=True):  # queued rows came first
            self._write(probs[None], lg, values)

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
        with self._queue.locked(strict=True):  # queued rows came first
            self.store_batch(rows, keys=keys, head=head, logits=logits, **columns)

    def store_batch(self, rows: npt.ArrayLike, **given: Any) -> None:
        """[`append_batch`][append_batch] for a caller that holds the queue's lock: a staged
        write (see ``WriteQueue.stage``)."""
        probs, logits = check_rows(rows, self.n_classes, 2), given.pop("logits", None)
        lg = None if logits is None else check_rows(logits, self.n_classes, 2, "logits")
        if lg is not None and lg.shape[0] != probs.shape[0]:
            raise ValueError(f"logits have {lg.shape[0]} rows, probabilities {probs.shape[0]}")
        self._write(probs, lg, {"key": given.pop("keys", None), "head": None, **given})

    def store_queued(self, rows: QueuedRows) -> None:
        """Store rows that waited in the write queue (called by it, lock held)."""
        probs = np.frombuffer(rows.data, self.dtype).reshape(len(rows.seq), self.n_classes)
        columns: dict[str, Any] = {"key": rows.keys, "head": rows.heads}
        for name in self._extra:
            columns[name] = [None if meta is None else meta.get(name) for meta in rows.metas]
        self._write(probs, None, columns, rows.seq)

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
        if self.on_overflow == "error" and self._ring.size + n > cap:
            raise BufferFullError(
                f"appending {n} rows to a buffer holding {self._ring.size} of capacity={cap} "
                "would overflow; raise capacity=, or use on_overflow='overwrite' or 'spill'"
            )
        if n == 0:
            return
        # a fresh block's numbers are its first one: they are written without an arange
        numbers: int | npt.NDArray[np.int64] = self._queue.take(n) if seq is None else seq
        if self.sink is not None:  # write-ahead: a row is stored only once the sink has it
            numbers = np.arange(numbers, numbers + n) if isinstance(numbers, int) else numbers
            kept = probs.copy() if seq is None else probs  # the queue keeps queued rows
            self._unwritten.append((kept, logits, numbers, values))
            try:
                return self.write_unwritten()
            except SinkError:
                del self._unwritten[len(self._unwritten) if seq is None else -1 :]
                raise
        self._store(probs, logits, numbers, values)

    def write_unwritten(self) -> None:
        """Write, then store, the blocks the sink refused before (the queue's lock held)."""
        while self._unwritten:
            probs, logits, numbers, values = self._unwritten[0]
            rows = self._ring.block(probs, logits, numbers, values, slice(0, None), self.labels)
            write_to_sink(self.sink, rows)  # type: ignore[arg-type]
            del self._unwritten[0]
            self._store(probs, logits, numbers, values)

    def _store(self, probs: Any, logits: Any, numbers: Any, values: Any) -> None:
        n, cap = len(probs), self.capacity
        if n > cap:  # only the newest ``cap`` rows can stay
            if isinstance(numbers, int):
                numbers = np.arange(numbers, numbers + n, dtype=np.int64)
            self._evicted += self._ring.size + n - cap
            self._ring.start = self._ring.size = 0
            keep = slice(n - cap, n)
            probs, numbers, values = probs[keep], numbers[keep], ColumnStore.slice(values, keep)
            logits, n = (None if logits is None else logits[keep]), cap
        overflow = max(0, self._ring.size + n - cap)
        self._ring.store(probs, logits, numbers, values, n, overflow)
        self._evicted += overflow

    def flush(self) -> None:
        """Store every queued row (and so write it to the sink); a failing sink raises here."""
        with self._queue.locked(strict=True):
            self.write_unwritten()

    # -- reading ------------------------------------------------------------------------------

    def rows(self) -> RowBlock:
        """All kept rows, oldest first (copies)."""
        with self._queue.locked():
            return self._ring.read(self._ring.index(), self.labels)

    def tail(self, n: int) -> RowBlock:
        """The ``n`` newest rows, oldest of them first."""
        with self._queue.locked():
            return self._ring.read(self._ring.index(max(0, self._ring.size - n)), self.labels)

    def latest(self) -> Distribution | None:
        """The newest row (O(1)), or None when the buffer is empty."""
        block = self.tail(1)
        return block.distribution(0) if len(block) else None

    def _ordered(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One array's kept rows, oldest first: a single column is copied, not all of them."""
        with self._queue.locked():
            return array[self._ring.index()]

    @property
    def probs(self) -> npt.NDArray[np.floating[Any]]:
        """Kept probabilities, oldest first (a copy)."""
        return self._ordered(self._ring.probs)

    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """Kept logits (``keep_logits=True``), else None."""
        return None if self._ring.logits is None else self._ordered(self._ring.logits)

    @property
    def seq(self) -> npt.NDArray[np.int64]:
        """Global sequence numbers of the kept rows."""
        return self._ordered(self._ring.seq)

    @property
    def finite(self) -> npt.NDArray[np.bool_]:
        """False where a row (or its logits) holds NaN or inf."""
        return self.rows().finite

    @property
    def keys(self) -> list[Any]:
        """The key of each kept row, oldest first."""
        return list(self.column("key"))

    def column(self, name: str) -> npt.NDArray[Any]:
        """One metadata column, oldest first."""
        self._cols.check_names((name,))
        with self._queue.locked():
            return self._cols.read(name, self._ring.index())

    def lookup(self, key: Hashable, column: str = "key") -> Distribution | None:
        """The most recent row whose ``column`` equals ``key``, or None."""
        self._cols.check_names((column,))
        target = np.empty((), object)
        target[()] = key  # compared as one value, even a tuple
        with self._queue.locked():
            idx = self._ring.index()
            hits = idx[self._cols.read(column, idx) == target]
            return self._ring.read(hits[-1:], self.labels).distribution(0) if len(hits) else None

    def __iter__(self) -> Iterator[Distribution]:
        return iter(self.rows())

    # -- persistence and merging ----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        with self._queue.locked():
            state = self.__dict__.copy()
        del state["_push"], state["_pending"]  # the queue travels and brings fresh ones
        state["sink"], state["_unwritten"] = None, []  # files do not travel; nor rows not in one
        if state["on_overflow"] == "spill":
            state["on_overflow"] = "overwrite"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach(self._queue)

    def merge(self, *buffers: ProbBuffer, capacity: int | None = None) -> ProbBuffer:
        """One buffer with the rows of this buffer and ``buffers`` ordered by sequence number:
        ``a.merge(b)`` is ``ProbBuffer.merge(a, b)``.

        All buffers must share labels, dtype and columns. ``capacity`` defaults to the total row
        count; ties in sequence number (buffers from separate processes) keep argument order.
        """
        every = (self, *buffers)
        kinds = {(b.labels, tuple(b.schema.items()), b.dtype, b.keep_logits) for b in every}
        if len(kinds) > 1:
            raise ValueError(
                "cannot merge buffers with different label spaces, columns, dtype or "
                f"keep_logits: {' vs '.join(str(b.labels) for b in every)}"
            )
        merged = RowBlock.concat([b.rows() for b in every])
        return type(self).from_rows(merged, self.schema, capacity=capacity, dtype=str(self.dtype))

    @classmethod
    def from_rows(
        cls,
        rows: RowBlock,
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
            queue=WriteQueue(int(rows.seq.max(initial=-1)) + 1),
        )
        with out._queue.locked():
            out._write(rows.probs, rows.logits, dict(rows.columns), rows.seq)
        return out
