"""Rows as they leave a buffer, where they go (sinks), and the sequence numbers they carry.

>>> import numpy as np
>>> from probhook.rows import Rows
>>> rows = Rows(np.eye(2, dtype=np.float32), np.arange(2), np.ones(2, bool),
...             {"key": np.array(["a", "b"], dtype=object)}, ("no", "yes"))
>>> for row in rows:
...     print(row.key, row.seq)
a 0
b 1
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

ColumnKind = Literal["int", "str"]
INT_NA = np.iinfo(np.int64).min
"""Stored in an ``int`` column where a row has no value (exported as a missing value)."""


@dataclass(frozen=True)
class Rows:
    """A block of rows in chronological order: what reads return and what sinks receive.

    ``columns`` holds ``key``, ``head`` and every extra column (strings as ``object`` arrays,
    ``None`` where missing; integers as ``int64`` with :data:`INT_NA` where missing).
    """

    probs: npt.NDArray[np.floating[Any]]
    seq: npt.NDArray[np.int64]
    finite: npt.NDArray[np.bool_]
    columns: dict[str, npt.NDArray[Any]]
    labels: tuple[str, ...]
    logits: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self.seq)

    def __iter__(self) -> Iterator[Row]:
        for i in range(len(self)):
            yield self.row(i)

    def row(self, i: int) -> Row:
        cols = {name: _scalar(values[i]) for name, values in self.columns.items()}
        logits = None if self.logits is None else self.logits[i]
        return Row(self.probs[i], int(self.seq[i]), bool(self.finite[i]), cols, logits)


@dataclass(frozen=True)
class Row:
    """One captured row: its probabilities, sequence number, finiteness flag and metadata."""

    probs: npt.NDArray[np.floating[Any]]
    seq: int
    finite: bool
    columns: dict[str, Any] = field(default_factory=dict)
    logits: npt.NDArray[np.float32] | None = None

    @property
    def key(self) -> Any:
        return self.columns.get("key")

    @property
    def head(self) -> str | None:
        head = self.columns.get("head")
        return None if head is None else str(head)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.integer):
        return None if value == INT_NA else int(value)
    return value


@runtime_checkable
class Sink(Protocol):
    """Where rows go before the ring buffer overwrites them (``on_overflow="spill"``).

    ``write`` receives blocks in sequence order, each row exactly once; ``close`` is called once
    by the owner when no more rows will come.
    """

    def write(self, rows: Rows) -> None:
        """Receive the next block of rows (oldest first)."""

    def close(self) -> None:
        """No more rows will come: finish and release the destination."""


class QueueOwner(Protocol):
    """A buffer whose single rows wait in a :class:`SeqCounter`'s queue."""

    def store_queued(self, entries: list[Any], end: int, seq: npt.NDArray[np.int64]) -> None:
        """Store the rows in ``entries[:end]`` (:data:`ENTRY` items each) with numbers ``seq``."""


ENTRY = 5
"""Queue items per row: owner, row bytes, key, head, extra column values (or None)."""


class SeqCounter:
    """Consecutive sequence numbers shared by buffers, with the one lock they all write under
    and the queue their single rows wait in.

    Buffers that share a counter share its lock and queue, so a write takes a single lock and
    sequence numbers follow append order across all of them. A row joins the queue by one
    ``list.extend`` of its :data:`ENTRY` items: one C call, so rows from threads never mix.
    """

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self.lock = threading.Lock()
        self.queue: list[Any] = []

    def take(self, n: int) -> int:
        """The first of ``n`` new numbers; call it with :attr:`lock` held."""
        first = self._next
        self._next = first + n
        return first

    def drain(self) -> None:
        """Hand the queued rows to their owners in queue order; call it with :attr:`lock` held.

        Rows leave the queue only once stored, so a failing sink leaves them for the next try;
        rows queued meanwhile by other threads lie past ``end`` and wait for the next drain.
        """
        queue = self.queue
        end = len(queue)
        if not end:
            return
        n = end // ENTRY
        owners: list[QueueOwner] = queue[0:end:ENTRY]
        first = self.take(n)
        if owners.count(owners[0]) == n:  # one owner: the common case
            try:
                owners[0].store_queued(queue, end, np.arange(first, first + n))
            except BaseException:
                self._next = first  # the rows stay queued and keep their numbers
                raise
            del queue[:end]
            return
        positions: dict[int, list[int]] = {}
        for i, owner in enumerate(owners):
            positions.setdefault(id(owner), []).append(i)
        stored: set[int] = set()
        try:
            for at in positions.values():
                entries = [item for i in at for item in queue[i * ENTRY : (i + 1) * ENTRY]]
                owners[at[0]].store_queued(entries, len(entries), first + np.array(at))
                stored.add(id(owners[at[0]]))
        finally:
            queue[:end] = [
                item
                for i, owner in enumerate(owners)
                if id(owner) not in stored
                for item in queue[i * ENTRY : (i + 1) * ENTRY]
            ]

    def __getstate__(self) -> dict[str, int]:
        return {"next": self._next}  # buffers store their queued rows before they pickle

    def __setstate__(self, state: dict[str, int]) -> None:
        self._next, self.lock, self.queue = state["next"], threading.Lock(), []
