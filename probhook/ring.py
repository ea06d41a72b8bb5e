"""The storage of a buffer: ``capacity`` rows in preallocated arrays, one per column, whose
positions wrap around the end. What to keep, drop or spill is the buffer's decision.

Examples:
    >>> import numpy as np
    >>> from probhook.ring import Ring
    >>> ring = Ring(2, 3, np.dtype("float32"), {"key": "str"}, keep_logits=False)
    >>> values = ring.cols.prepare({"key": ["a", "b"]}, 2)
    >>> ring.store(np.eye(2, dtype=np.float32), None, 0, values, 2, overflow=0)
    >>> ring.read(ring.index(), ("x", "y")).columns["key"].tolist()
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.block import ColumnKind, RowBlock
from probhook.column_store import ColumnStore


class Ring:
    """Rows ``start .. start + size`` (modulo ``capacity``) of preallocated arrays are kept."""

    def __init__(
        self,
        n_classes: int,
        capacity: int,
        dtype: np.dtype[Any],
        schema: Mapping[str, ColumnKind],
        keep_logits: bool,
    ) -> None:
        self.capacity = capacity
        self.probs = np.zeros((capacity, n_classes), dtype=dtype)
        self.logits = np.zeros((capacity, n_classes), np.float32) if keep_logits else None
        self.seq = np.zeros(capacity, dtype=np.int64)
        self.cols = ColumnStore(schema, capacity)
        self.start = self.size = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays and value tables."""
        arrays = [self.probs, self.seq] + ([] if self.logits is None else [self.logits])
        return sum(a.nbytes for a in arrays) + self.cols.nbytes

    def index(self, lo: int = 0, hi: int | None = None) -> npt.NDArray[np.intp]:
        """Array positions of kept rows ``lo .. hi`` (0 is the oldest)."""
        hi = self.size if hi is None else hi
        return (self.start + np.arange(lo, hi)) % self.capacity

    def read(self, idx: npt.NDArray[np.intp], labels: tuple[str, ...]) -> RowBlock:
        """The rows at ``idx`` (copies)."""
        probs = self.probs[idx]
        logits = None if self.logits is None else self.logits[idx]
        columns = self.cols.read_all(idx)
        return RowBlock(probs, self.seq[idx], finite(probs, logits), columns, labels, logits)

    def block(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        seq: npt.NDArray[np.int64],
        values: dict[str, Any],
        sl: slice,
        labels: tuple[str, ...],
    ) -> RowBlock:
        """Rows ``sl`` of a block that is being written, as [`read`][read] would return them."""
        probs, seq = probs[sl].astype(self.probs.dtype), seq[sl]
        lg = None if logits is None else logits[sl]
        columns = self.cols.block(values, sl, len(seq))
        return RowBlock(probs, seq, finite(probs, lg), columns, labels, lg)

    def store(
        self,
        probs: npt.NDArray[Any],
        logits: npt.NDArray[Any] | None,
        numbers: int | npt.NDArray[np.int64],
        values: dict[str, Any],
        n: int,
        overflow: int,
    ) -> None:
        """Write ``n`` rows after the kept ones, wrapping around the end; the ``overflow``
        oldest rows are overwritten. ``numbers``: the rows' sequence numbers, or the first of
        consecutive ones."""
        pos = (self.start + self.size) % self.capacity
        first = min(n, self.capacity - pos)
        parts = [(slice(pos, pos + first), slice(0, first))]
        if first < n:
            parts.append((slice(0, n - first), slice(first, n)))
        counting = _counting(n) if type(numbers) is int else None
        for dst, src in parts:
            self.probs[dst] = probs[src]
            if counting is None:
                self.seq[dst] = numbers[src]  # type: ignore[index]
            else:
                np.add(counting[src], numbers, out=self.seq[dst])
            if self.logits is not None:
                self.logits[dst] = logits[src]  # type: ignore[index]
        self.cols.store(values, parts, survivors=lambda: self.index(overflow))
        self.start = (self.start + overflow) % self.capacity
        self.size += n - overflow


def finite(probs: npt.NDArray[Any], logits: npt.NDArray[Any] | None) -> npt.NDArray[np.bool_]:
    """Per-row finiteness, read from the stored values: NaN or inf anywhere in a row marks it;
    in logits, -inf is a masked class, so only NaN and +inf count."""
    ok: npt.NDArray[np.bool_] = np.isfinite(probs).all(axis=1)
    if logits is not None:
        ok &= ~(np.isnan(logits) | np.isposinf(logits)).any(axis=1)
    return ok


_COUNTING: list[npt.NDArray[np.int64]] = [np.arange(4096, dtype=np.int64)]


def _counting(n: int) -> npt.NDArray[np.int64]:
    """``0 .. n-1``, from one array shared by all buffers and grown for larger blocks (a
    block's sequence numbers are written as first + counting, with no temporary array)."""
    counting = _COUNTING[0]
    if len(counting) < n:
        counting = _COUNTING[0] = np.arange(n, dtype=np.int64)
    return counting
