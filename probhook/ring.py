"""The storage of a buffer: ``capacity`` rows in preallocated arrays, one per column, whose
positions wrap around the end; the oldest rows are overwritten (counted in ``evicted``) or, with
``refuse_overflow``, a block that does not fit is refused.

Examples:
    >>> import numpy as np
    >>> from probhook.ring import Ring
    >>> ring = Ring(2, 3, np.dtype("float32"), {"key": "str"}, labels=("x", "y"))
    >>> values = ring.cols.prepare({"key": ["a", "b"]}, 2)
    >>> ring.store(np.eye(2, dtype=np.float32), None, np.arange(2), values)
    >>> ring.read(ring.index()).columns["key"].tolist()
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.block import ColumnKind, RowBlock
from probhook.column_store import ColumnStore


class BufferFullError(RuntimeError):
    """Raised by ``on_overflow="error"`` when an append would exceed the capacity."""


class Ring:
    """Rows ``start .. start + size`` (modulo ``capacity``) of preallocated arrays are kept.

    Stores are idempotent by sequence number: a block whose last number is not above the
    newest stored one is already here (a write interrupted after the store, tried again).
    """

    def __init__(
        self,
        n_classes: int,
        capacity: int,
        dtype: np.dtype[Any],
        schema: Mapping[str, ColumnKind],
        *,
        labels: tuple[str, ...],
        keep_logits: bool = False,
        refuse_overflow: bool = False,
    ) -> None:
        self.capacity, self.n_classes, self.dtype, self.labels = capacity, n_classes, dtype, labels
        self.refuse_overflow = refuse_overflow
        self.probs = np.zeros((capacity, n_classes), dtype=dtype)
        self.logits = np.zeros((capacity, n_classes), np.float32) if keep_logits else None
        self.seq = np.zeros(capacity, dtype=np.int64)
        self.cols = ColumnStore(schema, capacity)
        self.start = self.size = self.evicted = 0
        self.last_seq = -1  # the newest stored row's number

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays and value tables."""
        arrays = [self.probs, self.seq] + ([] if self.logits is None else [self.logits])
        return sum(a.nbytes for a in arrays) + self.cols.nbytes

    def index(self, lo: int = 0, hi: int | None = None) -> npt.NDArray[np.intp]:
        """Array positions of kept rows ``lo .. hi`` (0 is the oldest)."""
        hi = self.size if hi is None else hi
        return (self.start + np.arange(lo, hi)) % self.capacity

    def read(self, idx: npt.NDArray[np.intp]) -> RowBlock:
        """The rows at ``idx`` (copies)."""
        probs = self.probs[idx]
        logits = None if self.logits is None else self.logits[idx]
        columns = self.cols.read_all(idx)
        return RowBlock(probs, self.seq[idx], finite(probs, logits), columns, self.labels, logits,
                        self.cols.schema)  # fmt: skip

    def block(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        seq: npt.NDArray[np.int64],
        values: dict[str, Any],
    ) -> RowBlock:
        """A block that is being written, as [`read`][read] would return it once stored."""
        probs = probs.astype(self.probs.dtype, copy=False)
        columns = self.cols.block(values, len(seq))
        return RowBlock(probs, seq, finite(probs, logits), columns, self.labels, logits,
                        self.cols.schema)  # fmt: skip

    def check_room(self, n: int, waiting: int = 0) -> None:
        """With ``refuse_overflow``: refuse ``n`` more rows (``waiting`` not stored yet) that
        would not fit."""
        if self.refuse_overflow and self.size + waiting + n > self.capacity:
            raise BufferFullError(
                f"appending {n} rows to a buffer holding {self.size + waiting} of "
                f"capacity={self.capacity} would overflow; raise capacity=, or use "
                "on_overflow='overwrite' (with sink= every row is in the file)"
            )

    def store(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        seq: int | npt.NDArray[np.int64],
        values: dict[str, Any],
    ) -> None:
        """Keep a numbered block (``seq``: each row's number, or the first of consecutive
        ones) after the kept rows, overwriting the oldest ones; only the newest ``capacity``
        rows of a larger block stay.

        The rows are copied into their slots first and made visible last (``start`` and
        ``size``, with no call in between): an interruption leaves the kept rows as they were,
        and the same store done again fills the same slots.
        """
        n = len(probs)
        last = seq + n - 1 if isinstance(seq, int) else int(seq[-1]) if n else -1
        if not n or last <= self.last_seq:
            return
        cap, evicted = self.capacity, 0
        start, size = self.start, self.size
        if n > cap:  # only the newest ``cap`` rows can stay
            evicted, start, size = size + n - cap, 0, 0
            keep = slice(n - cap, n)
            seq = seq + n - cap if isinstance(seq, int) else seq[keep]
            probs, values = probs[keep], ColumnStore.slice(values, keep)
            logits, n = (None if logits is None else logits[keep]), cap
        overflow = max(0, size + n - cap)
        pos = (start + size) % cap
        first = min(n, cap - pos)
        parts = [(slice(pos, pos + first), slice(0, first))]
        if first < n:
            parts.append((slice(0, n - first), slice(first, n)))
        for dst, src in parts:
            self.probs[dst] = probs[src]
            if isinstance(seq, int):  # consecutive: first + 0 .. n-1, with no temporary array
                np.add(_counting(n)[src], seq, out=self.seq[dst])
            else:
                self.seq[dst] = seq[src]
            if self.logits is not None:
                self.logits[dst] = logits[src]  # type: ignore[index]
        self.cols.store(
            values, parts, survivors=lambda: (start + overflow + np.arange(size - overflow)) % cap
        )
        self.start, self.size = (start + overflow) % cap, size + n - overflow
        self.evicted, self.last_seq = self.evicted + evicted + overflow, last


_COUNTING: list[npt.NDArray[np.int64]] = [np.arange(4096, dtype=np.int64)]


def _counting(n: int) -> npt.NDArray[np.int64]:
    """``0 .. n-1``, from one array shared by all rings and grown for larger blocks."""
    counting = _COUNTING[0]
    if len(counting) < n:
        counting = _COUNTING[0] = np.arange(n, dtype=np.int64)
    return counting


def finite(probs: npt.NDArray[Any], logits: npt.NDArray[Any] | None) -> npt.NDArray[np.bool_]:
    """Per-row finiteness, read from the stored values: NaN or inf anywhere in a row marks it;
    in logits, -inf is a masked class, so only NaN and +inf count."""
    ok: npt.NDArray[np.bool_] = np.isfinite(probs).all(axis=1)
    if logits is not None:
        ok &= ~(np.isnan(logits) | np.isposinf(logits)).any(axis=1)
    return ok


def check_rows(
    values: npt.ArrayLike, n_classes: int, ndim: int, what: str = "rows"
) -> npt.NDArray[Any]:
    """``values`` as a floating array of shape ``(n_classes,)`` (ndim 1) or ``(n, n_classes)``,
    or a clear error."""
    if type(values) is np.ndarray:
        arr = values
    elif hasattr(values, "detach"):
        arr = values.detach().cpu().numpy()
    else:
        arr = np.asarray(values)
    if arr.dtype.kind != "f":
        raise TypeError(f"{what} must be floating point, got dtype {arr.dtype}")
    if arr.ndim != ndim or arr.shape[-1] != n_classes:
        shape = "(n_classes,)" if ndim == 1 else "(n, n_classes)"
        raise ValueError(
            f"{what} must have shape {shape} with n_classes={n_classes}, got {arr.shape}"
        )
    return arr
