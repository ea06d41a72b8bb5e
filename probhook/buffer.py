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
    check_value,
)
from probhook.ring import BufferFullError, Ring, check_rows
from probhook.sink import Sink
from probhook.writer import ENTRY, Rows, Writer

__all__ = ["QUEUE_ROWS", "BufferFullError", "ProbBuffer"]

QUEUE_ROWS = 1000
"""Single rows wait in a queue of at most this many by default (fewer for wide rows: at most
256 KiB of row data) and are then stored, and written to the sink, as one block."""


class ProbBuffer:
    """Fixed-capacity struct-of-arrays store for ``(n_classes,)`` probability rows: the rows
    (a [`Ring`][probhook.ring.Ring]) and their reads; writing is its
    [`Writer`][probhook.writer.Writer]'s.

    Args:
        n_classes: row width.
        capacity: rows kept; or give ``max_bytes`` and the row count is derived from it.
        labels: class names in column order (default ``"0" .. "C-1"``).
        dtype: ``"float32"`` (default), ``"float16"`` or ``"float64"`` for the probabilities.
        columns: extra metadata columns, name -> ``"int"`` or ``"str"`` (``key`` and ``head``
            always exist; ``"str"`` columns hold any value, stored once in a table).
        on_overflow: ``"overwrite"`` (oldest rows go, counted in ``evicted``) or ``"error"``
            (raise [`BufferFullError`][BufferFullError]).
        sink: every row is written to it before it is stored (the file holds every row, the
            buffer the newest ``capacity``).
        keep_logits: also keep the raw float32 logits (doubles memory for float32 rows).
        writer: share the writer (sequence numbers, lock, sink) with other buffers (one per
            head of a capture); ``sink`` then belongs to that writer.
        flush_rows: single rows wait until this many are queued (or a read, a batch or
            [`flush`][flush] comes), then are stored, and written to the sink, as one block.

    Single rows are queued and stored as a block, so the per-row cost is one copy and a list
    append; every read stores the queue first, so reads see every row appended before them.
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
        writer: Writer | None = None,
        flush_rows: int = QUEUE_ROWS,
    ) -> None:
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        check_choice("dtype", dtype, DTYPES)
        check_choice("on_overflow", on_overflow, OVERFLOW_POLICIES)
        if writer is not None and sink is not None:
            raise ValueError("give sink= to the shared writer, not to one of its buffers")
        schema: dict[str, ColumnKind] = {"key": "str", "head": "str", **(columns or {})}
        names = tuple(labels) if labels is not None else tuple(map(str, range(n_classes)))
        if len(names) != n_classes:
            raise ValueError(f"{len(names)} labels given for {n_classes} classes")
        self.n_classes, self.dtype, self.labels = n_classes, np.dtype(dtype), names
        self.schema, self.keep_logits, self.on_overflow = schema, keep_logits, on_overflow
        self._extra = [n for n in schema if n not in ("key", "head")]
        self._row_shape, self.one_row = (n_classes,), (1, n_classes)
        fixed = ColumnStore.fixed_nbytes(schema)
        self.capacity = capacity_for(capacity, max_bytes, self.row_nbytes, fixed)
        check_capacity(flush_rows)
        # "error" must refuse a row when it is appended, so only the other policies queue
        self._queued_dtype = self.dtype if on_overflow != "error" and not keep_logits else None
        # single rows wait at most flush_rows (and 256 KiB of row data) before they are stored
        rows = min(flush_rows, max(16, 2**18 // (n_classes * self.dtype.itemsize)))
        self.queue_limit = ENTRY * rows  # items of the writer's queue
        # the preallocated arrays the rows are kept in: what the writer stores into
        self.ring = Ring(n_classes, self.capacity, self.dtype, schema, labels=names,
                         keep_logits=keep_logits,
                         refuse_overflow=on_overflow == "error")  # fmt: skip
        self._attach(writer or Writer(sink))

    def _attach(self, writer: Writer) -> None:
        self.writer, self._push, self._pending = writer, writer.push, writer.pending

    @property
    def sink(self) -> Sink | None:
        """Where the writer writes every row, if anywhere."""
        return self.writer.sink

    @property
    def row_nbytes(self) -> int:
        """Bytes one row occupies across all columns, its share of the value tables included."""
        per_class = self.dtype.itemsize + (4 if self.keep_logits else 0)
        return self.n_classes * per_class + 8 + ColumnStore.row_nbytes(self.schema)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays and value tables."""
        return self.ring.nbytes

    @property
    def evicted(self) -> int:
        """Rows dropped from the buffer so far to make room."""
        with self.writer.reading():
            return self.ring.evicted

    def __len__(self) -> int:
        with self.writer.reading():
            return self.ring.size

    def __repr__(self) -> str:
        rows = f"{len(self)}/{self.capacity} rows x {self.n_classes} classes"
        return f"ProbBuffer({rows}, evicted={self.evicted}, {self.nbytes / 2**20:.1f} MiB)"

    # -- writing: handed to the writer --------------------------------------------------------

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
        """Append one ``(n_classes,)`` row. ``meta`` maps extra columns to values (others are
        ignored; read when the row is stored: do not change it after); ``columns`` name extra
        column values directly."""
        if columns:
            self.ring.cols.check_names(columns)
            for name, value in columns.items():
                check_value(name, value, self.schema[name])
            meta = {**(meta or {}), **columns}
        try:  # a row already in the buffer's dtype and shape is queued as its bytes
            if (
                row.dtype is self._queued_dtype  # type: ignore[union-attr]
                and row.shape == self._row_shape  # type: ignore[union-attr]
                and logits is None
            ):
                self._push((self.ring, row.tobytes(), key, head, meta))  # type: ignore[union-attr]
                if len(self._pending) >= self.queue_limit:
                    self.writer.drain()
                return
        except AttributeError:  # a list or another array-like
            pass
        probs = check_rows(row, self.n_classes, 1)
        lg = None if logits is None else check_rows(logits, self.n_classes, 1, "logits")[None]
        values: dict[str, Any] = {n: Broadcast((meta or {}).get(n)) for n in self._extra}
        values.update(key=Broadcast(key), head=Broadcast(head))  # a tuple key is one value
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
        probs = check_rows(rows, self.n_classes, 2)
        lg = None if logits is None else check_rows(logits, self.n_classes, 2, "logits")
        if lg is not None and lg.shape[0] != probs.shape[0]:
            raise ValueError(f"logits have {lg.shape[0]} rows, probabilities {probs.shape[0]}")
        self._write(probs, lg, {"key": keys, "head": head, **columns})

    def _write(self, probs: Any, logits: Any, columns: Mapping[str, Any]) -> None:
        if self.keep_logits and logits is None:
            raise ValueError("this buffer keeps logits (keep_logits=True): pass logits=")
        # behind rows a sink refuses, the batch is not taken: the caller may append it again
        self.writer.write(Rows(self.ring, probs, logits, columns), keep=False)

    def flush(self) -> None:
        """Store every queued row (and so write it to the sink); a failing sink raises here."""
        self.writer.drain()

    # -- reading ------------------------------------------------------------------------------

    def rows(self) -> RowBlock:
        """All kept rows, oldest first (copies)."""
        with self.writer.reading():
            return self.ring.read(self.ring.index())

    def tail(self, n: int) -> RowBlock:
        """The ``n`` newest rows, oldest of them first."""
        with self.writer.reading():
            return self.ring.read(self.ring.index(max(0, self.ring.size - n)))

    def latest(self) -> Distribution | None:
        """The newest row (O(1)), or None when the buffer is empty."""
        block = self.tail(1)
        return block.distribution(0) if len(block) else None

    def _ordered(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One array's kept rows, oldest first: a single column is copied, not all of them."""
        with self.writer.reading():
            return array[self.ring.index()]

    @property
    def probs(self) -> npt.NDArray[np.floating[Any]]:
        """Kept probabilities, oldest first (a copy)."""
        return self._ordered(self.ring.probs)

    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """Kept logits (``keep_logits=True``), else None."""
        return None if self.ring.logits is None else self._ordered(self.ring.logits)

    @property
    def seq(self) -> npt.NDArray[np.int64]:
        """Global sequence numbers of the kept rows."""
        return self._ordered(self.ring.seq)

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
        self.ring.cols.check_names((name,))
        with self.writer.reading():
            return self.ring.cols.read(name, self.ring.index())

    def lookup(self, key: Hashable, column: str = "key") -> Distribution | None:
        """The most recent row whose ``column`` equals ``key``, or None."""
        self.ring.cols.check_names((column,))
        target = np.empty((), object)
        target[()] = key  # compared as one value, even a tuple
        with self.writer.reading():
            idx = self.ring.index()
            hits = idx[self.ring.cols.read(column, idx) == target]
            return self.ring.read(hits[-1:]).distribution(0) if len(hits) else None

    def __iter__(self) -> Iterator[Distribution]:
        return iter(self.rows())

    # -- persistence and merging ----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        with self.writer.reading():
            state = self.__dict__.copy()
        del state["_push"], state["_pending"]
        # the rows travel stored; a file does not travel: the copy gets a writer without one
        state["writer"] = Writer(start=self.writer._next)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach(self.writer)

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
            writer=Writer(start=int(rows.seq.max(initial=-1)) + 1),
        )
        if len(rows):
            values = out.ring.cols.prepare(dict(rows.columns), len(rows))
            out.ring.store(rows.probs, rows.logits, rows.seq, values)
        return out
