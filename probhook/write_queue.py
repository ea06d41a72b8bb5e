"""The write path's one owner: a queue of single rows, the lock every write takes, and the
sequence numbers rows get.

The buffers of one capture share one queue. A hook's row joins it by one ``list.extend`` of a
five-item entry ``(owner, row bytes, key, head, meta)`` — a single C call, so rows from threads
never mix and no lock is taken per row. A token head's forward, which becomes many rows, joins
it as a *staged write* ([`WriteQueue.stage`][WriteQueue.stage]): a function that maps the
forward to rows and stores them. Before any read or batch write,
[`WriteQueue.locked`][WriteQueue.locked] takes the lock and drains the queue: staged writes run
first, in the order they came, then single rows are unpacked here, grouped by owner, and each
owner stores its rows as one block ([`QueueOwner.store_queued`][QueueOwner.store_queued]).

Examples:
    >>> from probhook.write_queue import WriteQueue
    >>> queue = WriteQueue()
    >>> with queue.locked():
    ...     queue.take(3), queue.take(2)
    (0, 3)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from probhook.sink import SinkError

ENTRY = 5
"""Items per queued row: owner, row bytes, key, head, meta (extra column values, or None)."""


@dataclass(frozen=True)
class QueuedRows:
    """One owner's queued rows, unpacked: their bytes joined, and per row its key, head, meta
    and sequence number."""

    data: bytes
    keys: list[Any]
    heads: list[Any]
    metas: list[Any]
    seq: npt.NDArray[np.int64]


class QueueOwner(Protocol):
    """A buffer whose single rows wait in a [`WriteQueue`][WriteQueue]."""

    def store_queued(self, rows: QueuedRows) -> None:
        """Store ``rows`` (called with the queue's lock held)."""


class WriteQueue:
    """Consecutive sequence numbers, the lock all writes take, and the queue of single rows.

    Sequence numbers follow append order across every buffer that shares the queue, except
    that a staged write's rows are numbered when it runs, before the single rows queued
    meanwhile. ``push(entry)`` appends one packed entry (see the module docstring); ``pending``
    is the list of queued items, whose length tells when to drain. ``stage(write)`` adds a
    staged write (``staged``: those waiting), which runs with the lock held and stores its rows
    through the owner's lock-held path (``ProbBuffer.store_batch``).
    """

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self.lock = threading.Lock()
        self.pending: list[Any] = []
        self.push = self.pending.extend
        self.staged: list[Callable[[], None]] = []
        self.stage = self.staged.append
        self.error: Exception | None = None  # the last failed drain, while rows wait
        # made once: a class-based context is cheaper per use than a generator-based one
        self._reading, self._writing = Drained(self, strict=False), Drained(self, strict=True)
        self._keeping = Drained(self, strict=True, keep=True)

    def take(self, n: int) -> int:
        """The first of ``n`` new numbers; call it with [`lock`][lock] held."""
        first = self._next
        self._next = first + n
        return first

    def locked(self, *, strict: bool = False, keep: bool = False) -> Drained:
        """Hold the lock with every queued row stored: reads and writes come after them.

        Storing can fail (a sink that cannot write): ``strict`` (writes) raises; reads go on
        with the rows already stored, and the failure stays in ``error`` until a later drain
        succeeds (the rows stay queued, nothing is lost). Any other failure raises for reads
        too. ``keep`` (a hook's write) goes on after such a failure, so that the caller's own
        rows are kept (stored, or held by their buffer for the next write), and raises it when
        the block ends: the forward that raises keeps its rows, numbered before the queued
        rows that still wait.
        """
        if keep:
            return self._keeping
        return self._writing if strict else self._reading

    def drain_now(self) -> None:
        """Store the queued rows now (the queue is full, or a flush); failures raise."""
        with self.lock:
            self.drain()

    def drain(self) -> None:
        """Hand the queued rows to their owners in queue order; call it with [`lock`][lock] held.

        Rows leave the queue only once stored, so a failing sink leaves them for the next try;
        rows queued meanwhile by other threads lie past ``end`` and wait for the next drain.
        A staged write the sink refuses keeps its rows in its buffer (written again first at
        the next write, as every refused batch is).
        """
        staged = self.staged
        while staged:  # each leaves the list before it runs: a failure is not run twice
            staged.pop(0)()
        queue = self.pending
        end = len(queue)
        if not end:
            self.error = None
            return
        n = end // ENTRY
        owners: list[QueueOwner] = queue[0:end:ENTRY]
        first = self.take(n)
        if owners.count(owners[0]) == n:  # one owner: the common case
            try:
                owners[0].store_queued(_unpack(queue, end, np.arange(first, first + n)))
            except BaseException:
                self._next = first  # the rows stay queued and keep their numbers
                raise
            del queue[:end]
            self.error = None
            return
        positions: dict[int, list[int]] = {}
        for i, owner in enumerate(owners):
            positions.setdefault(id(owner), []).append(i)
        stored: set[int] = set()
        try:
            for at in positions.values():
                entries = [item for i in at for item in queue[i * ENTRY : (i + 1) * ENTRY]]
                owners[at[0]].store_queued(_unpack(entries, len(entries), first + np.array(at)))
                stored.add(id(owners[at[0]]))
            self.error = None
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
        self.__init__(state["next"])  # type: ignore[misc]


class Drained:
    """The context of [`WriteQueue.locked`][probhook.write_queue.WriteQueue.locked]."""

    __slots__ = ("failed", "keep", "queue", "strict")

    def __init__(self, queue: WriteQueue, *, strict: bool, keep: bool = False) -> None:
        self.queue, self.strict, self.keep = queue, strict, keep
        self.failed: SinkError | None = None  # a keeping write's failure, raised at its end

    def __enter__(self) -> None:
        queue = self.queue
        queue.lock.acquire()
        try:
            queue.drain()
        except SinkError as err:  # the rows are kept: a read goes on with those stored
            if self.keep:  # so does a hook's write, which raises it at its end
                self.failed = err
            elif self.strict:
                queue.lock.release()
                raise
            queue.error = err
        except BaseException:
            queue.lock.release()
            raise

    def __exit__(self, exc_type: object, *exc: object) -> None:
        failed, self.failed = self.failed, None  # set with the lock held, by this thread
        self.queue.lock.release()
        if failed is not None and exc_type is None:
            raise failed


def _unpack(entries: list[Any], end: int, seq: npt.NDArray[np.int64]) -> QueuedRows:
    return QueuedRows(
        b"".join(entries[1:end:ENTRY]),
        entries[2:end:ENTRY],
        entries[3:end:ENTRY],
        entries[4:end:ENTRY],
        seq,
    )
