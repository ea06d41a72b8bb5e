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

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from probhook.rows import INT_NA, ColumnKind, Row, Rows, SeqCounter, Sink

OverflowPolicy = Literal["overwrite", "error", "spill"]

_PER_ROW = (list, tuple, np.ndarray)
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
            always exist).
        on_overflow: ``"overwrite"`` (oldest rows go, counted in ``evicted``), ``"error"``
            (raise :class:`BufferFullError`) or ``"spill"`` (rows go to ``sink`` before they are
            overwritten; :meth:`flush` writes the rest).
        keep_logits: also keep the raw float32 logits (doubles memory for float32 rows).
        seq_counter: share sequence numbers with other buffers (one per head of a capture).
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
        for name, kind in schema.items():
            if kind not in ("int", "str"):
                raise ValueError(f"column {name!r} has kind {kind!r}; expected 'int' or 'str'")
        self.labels = tuple(labels) if labels is not None else tuple(map(str, range(n_classes)))
        if len(self.labels) != n_classes:
            raise ValueError(f"{len(self.labels)} labels given for {n_classes} classes")
        self.n_classes, self.dtype = n_classes, np.dtype(_DTYPES[dtype])
        self.schema, self.keep_logits = schema, keep_logits
        self._names = frozenset(schema)
        self._row_shape = (n_classes,)
        self._extra_int = [n for n, k in schema.items() if k == "int"]
        self._extra_str = [n for n, k in schema.items() if k == "str" and n not in ("key", "head")]
        self.fast_rows = on_overflow == "overwrite" and not keep_logits
        self.capacity = self._resolve_capacity(capacity, max_bytes)
        self.on_overflow, self.sink = on_overflow, sink
        self.spill_chunk = spill_chunk or max(1, self.capacity // 4)
        cap = self.capacity
        self._probs = np.zeros((cap, n_classes), dtype=self.dtype)
        self._logits = np.zeros((cap, n_classes), dtype=np.float32) if keep_logits else None
        self._seq = np.zeros(cap, dtype=np.int64)
        self._finite = np.ones(cap, dtype=bool)
        # String columns hold references to the caller's objects (no object is created per
        # row); once a row is overwritten its key can be freed, so memory stays bounded even
        # when every page has a unique id.
        self._cols: dict[str, npt.NDArray[Any]] = {
            name: np.full(cap, None, object) if kind == "str" else np.full(cap, INT_NA, np.int64)
            for name, kind in schema.items()
        }
        self._start = self._size = self._evicted = self._unspilled = 0
        self._counter = seq_counter or SeqCounter()
        self._lock = self._counter.lock

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
            capacity = max_bytes // self.row_nbytes
            if capacity < 1:
                raise ValueError(
                    f"max_bytes={max_bytes} holds no row; one row takes {self.row_nbytes} bytes"
                )
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        return capacity

    @property
    def row_nbytes(self) -> int:
        """Bytes one row occupies across all columns."""
        per_class = self.dtype.itemsize + (4 if self.keep_logits else 0)
        meta = 8 * len(self.schema)
        return self.n_classes * per_class + 8 + 1 + meta

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays."""
        arrays = [self._probs, self._seq, self._finite, *self._cols.values()]
        if self._logits is not None:
            arrays.append(self._logits)
        return sum(a.nbytes for a in arrays)

    @property
    def evicted(self) -> int:
        """Rows dropped from the buffer so far (overwritten or spilled)."""
        return self._evicted

    def __len__(self) -> int:
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
        probs = self._check(row, 1)
        if logits is None and self.fast_rows and self._single_values(columns):
            self.append_row(probs, {"key": key, **columns}, head)
            return
        lg = None if logits is None else self._check(logits, 1, "logits")[None]
        scalars = {"key": key, "head": head, **columns}  # a tuple key is one value, not a row each
        self._write(probs[None], lg, {k: _Same(v) for k, v in scalars.items()})

    def _single_values(self, columns: Mapping[str, Any]) -> bool:
        return self._names.issuperset(columns) and not any(
            type(v) in _PER_ROW for v in columns.values()
        )

    def append_row(self, row: npt.NDArray[Any], meta: Mapping[str, Any] | None, head: Any) -> None:
        """The hot path for hooks (one page per forward): ``row`` is a float ``(n_classes,)``
        array already; ``meta`` holds ``key`` and any extra column values (others are ignored).

        Only for ``on_overflow="overwrite"`` without logits; everything else uses
        :meth:`append_batch`.
        """
        if row.shape != self._row_shape:
            raise ValueError(f"row must have shape ({self.n_classes},), got {row.shape}")
        # A finite sum of squares means every entry is finite; NaN means one is NaN; inf may be
        # an overflow of huge finite values, so only then is each entry checked.
        square = float(row.dot(row))
        finite = math.isfinite(square) or (square == math.inf and bool(np.isfinite(row).all()))
        cols = self._cols
        with self._lock:
            pos = (self._start + self._size) % self.capacity
            self._probs[pos] = row
            self._seq[pos] = self._counter.take(1)
            self._finite[pos] = finite
            cols["head"][pos] = head
            if meta is None:
                cols["key"][pos] = None
            else:
                cols["key"][pos] = meta.get("key")
                for name in self._extra_int:
                    value = meta.get(name)
                    cols[name][pos] = INT_NA if value is None else value
                for name in self._extra_str:
                    cols[name][pos] = meta.get(name)
            if self._size == self.capacity:
                self._start = (self._start + 1) % self.capacity
                self._evicted += 1
            else:
                self._size += 1

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
        if (
            len(probs) == 1
            and logits is None
            and self.fast_rows
            and type(keys) not in _PER_ROW
            and (not columns or self._single_values(columns))
        ):
            self.append_row(probs[0], {"key": keys, **columns}, head)
            return
        lg = None if logits is None else self._check(logits, 2, "logits")
        if lg is not None and lg.shape[0] != probs.shape[0]:
            raise ValueError(f"logits have {lg.shape[0]} rows, probabilities {probs.shape[0]}")
        self._write(probs, lg, {"key": keys, "head": head, **columns})

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

    def _encode(self, name: str, values: Any, n: int) -> Any:
        """One value per row as an array, or one value for all rows as :class:`_Same`."""
        if type(values) is _Same:
            values = values.value
        elif isinstance(values, (list, tuple, np.ndarray)):
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} rows")
            if self.schema[name] == "str":
                return np.fromiter(values, dtype=object, count=n)
            return np.array([INT_NA if v is None else v for v in values], dtype=np.int64)
        if self.schema[name] == "int":
            return _Same(INT_NA if values is None else int(values))
        return _Same(values)

    def _write(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        columns: Mapping[str, Any],
    ) -> None:
        n, cap = len(probs), self.capacity
        if not self._names.issuperset(columns):
            unknown = sorted(set(columns) - self._names)[0]
            raise KeyError(f"unknown column {unknown!r}; this buffer has {sorted(self.schema)}")
        if self.keep_logits and logits is None:
            raise ValueError("this buffer keeps logits (keep_logits=True): pass logits=")
        finite = _finite_rows(probs)
        if logits is not None:  # -inf logits are masked classes; NaN and +inf are not
            finite &= ~(np.isnan(logits) | np.isposinf(logits)).any(axis=1)
        with self._lock:
            values_by_column = {
                name: self._encode(name, columns.get(name), n) for name in self.schema
            }
            if self.on_overflow == "error" and self._size + n > cap:
                raise BufferFullError(
                    f"appending {n} rows to a buffer holding {self._size} of capacity={cap} "
                    "would overflow; raise capacity= (or max_bytes=), or use "
                    "on_overflow='overwrite' or 'spill'"
                )
            first_seq = self._counter.take(n)
            seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
            block = (probs, logits, seq, finite, values_by_column)
            if n > cap:  # only the newest ``cap`` rows can stay
                if self.on_overflow == "spill":
                    self._spill(self._size)
                    assert self.sink is not None
                    self.sink.write(self._rows_from_block(block, slice(0, n - cap)))
                self._evicted += self._size + n - cap
                self._start = self._size = self._unspilled = 0
                block = _slice_block(block, slice(n - cap, n))
                n = cap
            overflow = self._size + n - cap
            if overflow > 0:
                if self.on_overflow == "spill":
                    spilled = self._size - self._unspilled
                    if overflow > spilled:
                        # spill in chunks so that the sink writes row groups, not single rows
                        self._spill(max(overflow - spilled, self.spill_chunk))
                self._evicted += overflow
            self._store(block, n)
            if overflow > 0:
                self._start = (self._start + overflow) % cap
                self._size -= overflow
            self._size += n
            self._unspilled = min(self._unspilled + n, self._size)

    def _store(self, block: tuple[Any, ...], n: int) -> None:
        probs, logits, seq, finite, values_by_column = block
        pos = (self._start + self._size) % self.capacity
        first = min(n, self.capacity - pos)
        parts = [(slice(pos, pos + first), slice(0, first))]
        if first < n:  # wraps around the end
            parts.append((slice(0, n - first), slice(first, n)))
        for dst, src in parts:
            self._probs[dst] = probs[src]
            self._seq[dst] = seq[src]
            self._finite[dst] = finite[src]
            if self._logits is not None:
                self._logits[dst] = logits[src]
            for name, values in values_by_column.items():
                self._cols[name][dst] = values.value if type(values) is _Same else values[src]

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
        if self.sink is None:
            return
        with self._lock:
            self._spill(self._unspilled)

    # -- reading ------------------------------------------------------------------------------

    def _index(self, lo: int = 0, hi: int | None = None) -> npt.NDArray[np.intp]:
        hi = self._size if hi is None else hi
        return (self._start + np.arange(lo, hi)) % self.capacity

    def _rows(self, idx: npt.NDArray[np.intp]) -> Rows:
        columns = {name: values[idx] for name, values in self._cols.items()}
        logits = None if self._logits is None else self._logits[idx]
        return Rows(
            self._probs[idx], self._seq[idx], self._finite[idx], columns, self.labels, logits
        )

    def _rows_from_block(self, block: tuple[Any, ...], sl: slice) -> Rows:
        probs, logits, seq, finite, values_by_column = block
        n = len(seq[sl])
        columns = {
            name: values.expand(n, self._cols[name].dtype) if type(values) is _Same else values[sl]
            for name, values in values_by_column.items()
        }
        lg = None if logits is None else logits[sl]
        return Rows(probs[sl].astype(self.dtype), seq[sl], finite[sl], columns, self.labels, lg)

    def rows(self) -> Rows:
        """All kept rows, oldest first (copies)."""
        with self._lock:
            return self._rows(self._index())

    def latest(self, n: int) -> Rows:
        """The ``n`` newest rows, oldest of them first."""
        with self._lock:
            return self._rows(self._index(max(0, self._size - n)))

    def _ordered(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One array's kept rows, oldest first: a single column is copied, not all of them."""
        with self._lock:
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
        """False where a row (or its logits) held NaN or inf."""
        return self._ordered(self._finite)

    @property
    def keys(self) -> list[Any]:
        """The key of each kept row, oldest first."""
        return list(self.column("key"))

    def column(self, name: str) -> npt.NDArray[Any]:
        """One metadata column, oldest first."""
        if name not in self.schema:
            raise KeyError(f"unknown column {name!r}; this buffer has {sorted(self.schema)}")
        return self._ordered(self._cols[name])

    def lookup(self, key: Hashable, column: str = "key") -> Row | None:
        """The most recent row whose ``column`` equals ``key``, or None."""
        if column not in self.schema:
            raise KeyError(f"unknown column {column!r}; this buffer has {sorted(self.schema)}")
        with self._lock:
            idx = self._index()
            hits = idx[self._cols[column][idx] == key]
            return None if len(hits) == 0 else self._rows(hits[-1:]).row(0)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    # -- persistence and merging ----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # the counter travels and brings a fresh lock
        state["sink"] = None  # open files and writers do not travel between processes
        if state["on_overflow"] == "spill":
            state["on_overflow"] = "overwrite"
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = self._counter.lock

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
        )
        columns = {name: list(values) for name, values in rows.columns.items()}
        out._write(rows.probs, rows.logits, columns)
        n = len(out)
        out._seq[:n] = rows.seq[len(rows) - n :]
        out._finite[:n] = rows.finite[len(rows) - n :]
        out._counter = SeqCounter(int(rows.seq.max(initial=-1)) + 1)
        out._lock = out._counter.lock
        return out


def _finite_rows(values: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Per-row finiteness. Whole-array max and min are fast contiguous reductions that see any
    NaN or inf, so they settle the common all-finite case; only then is each row checked."""
    if len(values) and np.isfinite(values.max()) and np.isfinite(values.min()):
        return np.ones(len(values), dtype=bool)
    return np.isfinite(values).all(axis=1)  # type: ignore[no-any-return]


class _Same:
    """One column value shared by every row of an append (stored by broadcasting)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def expand(self, n: int, dtype: Any) -> npt.NDArray[Any]:
        out = np.empty(n, dtype=dtype)
        out.fill(self.value)
        return out


def _slice_block(block: tuple[Any, ...], sl: slice) -> tuple[Any, ...]:
    probs, logits, seq, finite, columns = block
    lg = None if logits is None else logits[sl]
    cols = {k: v if type(v) is _Same else v[sl] for k, v in columns.items()}
    return probs[sl], lg, seq[sl], finite[sl], cols
