"""The write path's one owner: how a row gets from a hook into its ring buffer and the sink.

A [`Writer`][Writer] serves every head of a capture (or one standalone buffer). It holds

* the **queue**: a hook's single row joins it by one ``list.extend`` of a five-item entry
  ``(ring, row bytes, key, head, meta)`` — a single C call, so rows from threads never mix and no
  lock is taken per row; a mapped head's forward (one row per word or element) joins it as a
  *staged* entry, a function that makes the forward's rows when the queue is drained;
* the **log**: blocks of rows, numbered, waiting for the sink and then their ring; numbers are
  given once, in queue order, and never change;
* the **lock** every drain, batch write and read takes, the **sink**, the **flush thread** that
  drains at least every ``flush_seconds``, and the **failure policy**: a block the sink refuses
  stays first in the log (the rows behind it wait), the write that tried raises a
  [`SinkError`][probhook.sink.SinkError], and the next drain tries again; a sink whose file is
  gone (``SinkLostError``, said once) is not tried again, and rows stay in memory only.

Every step can be interrupted (Ctrl-C) and done again: entries leave the queue only together
with the blocks they become, and both the file sink and the ring skip rows whose number they
already hold, so a row is either written once or still waiting, never both.

Examples:
    >>> import numpy as np
    >>> from probhook.ring import Ring
    >>> from probhook.writer import Writer
    >>> ring = Ring(2, 4, np.dtype("float32"), {"key": "str", "head": "str"}, labels=("a", "b"))
    >>> writer = Writer()
    >>> writer.push((ring, np.float32([0.9, 0.1]).tobytes(), "p1", None, None))
    >>> with writer.reading():
    ...     ring.read(ring.index()).columns["key"].tolist(), ring.seq[:1].tolist()
    (['p1'], [0])
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.ring import Ring
from probhook.sink import Sink, SinkError, SinkLostError, SinkReentryError, write_to_sink

ENTRY = 5
"""Items per queued entry: ring (or ``STAGED``), row bytes (or the staged function), key, head,
meta (extra column values, or None)."""
STAGED: Any = object()
"""The first item of a staged entry."""


@dataclass(slots=True)  # not frozen: a frozen init costs a microsecond per batch
class Rows:
    """Rows for one ring, made by a staged forward: probabilities, logits and column values
    (one value for every row, or one per row)."""

    ring: Ring
    probs: npt.NDArray[Any]
    logits: npt.NDArray[Any] | None
    columns: Mapping[str, Any]


@dataclass(slots=True)
class _Block:
    """Numbered rows waiting for the sink, then their ring: ``n`` rows numbered from
    ``first``."""

    ring: Ring
    probs: npt.NDArray[Any]
    logits: npt.NDArray[Any] | None
    first: int
    n: int
    values: dict[str, Any]


class Writer:
    """Queue, log, lock, sequence numbers, sink and flush thread of one capture (see the module
    docstring). ``push`` is the queue's ``extend``; ``pending`` the queue itself."""

    def __init__(self, sink: Sink | None = None, *, start: int = 0) -> None:
        self.sink = sink
        self.lock = threading.Lock()
        self.pending: list[Any] = []
        self.push = self.pending.extend
        self.error: SinkError | None = None  # the sink's last refusal, while rows wait
        self.lost: SinkLostError | None = None  # the sink's file is gone: rows stay in memory
        self._next = start
        self._log: list[_Block] = []
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None  # what stopped the flush thread
        self._unsaid: SinkLostError | None = None  # a loss the flush thread found, to raise
        self._owner = 0  # the thread holding the lock

    # -- entering rows ----------------------------------------------------------------------

    def stage(self, make_rows: Callable[[], Rows | None]) -> None:
        """Queue a mapped forward: ``make_rows`` runs at the next drain (lock held)."""
        self.push((STAGED, make_rows, None, None, None))

    def write(
        self, rows: Rows | Callable[[], Rows | None], *, keep: bool = True, copy: bool = True
    ) -> None:
        """Write a batch now, after everything queued: ``rows``, or the function that makes
        them (a mapped head's forward mapped at once). A sink that refuses raises a
        ``SinkError`` and the batch is kept (its arrays copied when ``copy``: the caller owns
        them) and written by a later drain; without ``keep`` (a caller who can try again), a
        batch behind rows the sink still refuses is not taken at all."""
        with self._locked():
            failed = self._take_pending()
            if not keep and self._log:
                try:
                    self._write_log()
                except SinkError as err:
                    n = len(rows.probs) if isinstance(rows, Rows) else "the"
                    raise SinkError(f"{err}; the {n} rows given now were not appended") from err
            made = rows if isinstance(rows, Rows) else rows()
            block = None if made is None or not len(made.probs) else self._number(made)
            if block is not None:
                self._log += [block]
            try:
                self._write_log()
            except SinkError:
                if copy and block is not None and any(b is block for b in self._log):
                    block.probs = block.probs.copy()
                    block.logits = None if block.logits is None else block.logits.copy()
                raise
            unsaid, self._unsaid = self._unsaid, None
        if unsaid is not None:
            raise unsaid
        if failed is not None:
            raise failed

    # -- draining -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Store (and write) everything queued; a sink that refuses raises a ``SinkError``
        (also a lost file the flush thread found, once)."""
        with self._locked():
            failed = self._take_pending()
            self._write_log()
            unsaid, self._unsaid = self._unsaid, None
        if unsaid is not None:
            raise unsaid
        if failed is not None:
            raise failed

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, refused to a thread that holds it already: a sink whose ``write`` reads
        the capture would wait for itself."""
        me = threading.get_ident()
        if self._owner == me:
            raise SinkReentryError(
                "the capture was read or written from inside its own sink's write(): a sink "
                "receives its rows and may not read the capture (it would wait for itself)"
            )
        with self.lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock with everything queued stored: reads see every row appended before
        them. A sink that refuses does not stop a read (its error stays in ``error``)."""
        with self._locked():
            failed = self._take_pending()
            with suppress(SinkError):
                self._write_log()
            yield
        if failed is not None:
            raise failed

    def waiting(self, ring: Ring) -> int:
        """Rows of ``ring`` numbered but not stored yet (lock held)."""
        return sum(b.n for b in self._log if b.ring is ring)

    def _take_pending(self) -> Exception | None:
        """Turn the queue into numbered blocks in the log (lock held). Rows that cannot be
        stored (a staged forward whose mapping fails, a value a column cannot hold) are
        dropped, and the error returned, to be raised once the lock is free: they never keep
        the rows behind them from being written.

        Entries leave the queue together with the blocks they become (two statements with no
        call between, where no interruption lands); other threads may append meanwhile."""
        queue = self.pending
        end = len(queue)
        if not end:
            return None
        first, failed = self._next, None
        blocks: list[_Block] = []
        try:
            owners = queue[0:end:ENTRY]
            starts: list[int] = []  # of staged entries; one owner throughout (a C-level count,
            if owners.count(owners[0]) == len(owners):  # identity first) is the common case
                if owners[0] is STAGED:
                    starts = list(range(0, end, ENTRY))
            else:
                starts = [i * ENTRY for i, owner in enumerate(owners) if owner is STAGED]
            bounds = [0, *[b for s in starts for b in (s, s + ENTRY)], end]
            for lo, hi in zip(bounds[::2], bounds[1::2], strict=True):
                failed = self._single_rows(queue, lo, hi, blocks) or failed
                if hi < end:  # the staged entry at hi
                    try:
                        made = queue[hi + 1]()
                        if made is not None and len(made.probs):
                            blocks.append(self._number(made))
                    except Exception as err:  # this forward only: the rest are written
                        failed = err
        except BaseException:  # interrupted: the entries wait, numbered again later
            self._next = first
            raise
        self._log += blocks
        del queue[:end]
        return failed

    def _single_rows(
        self, queue: list[Any], lo: int, hi: int, blocks: list[_Block]
    ) -> Exception | None:
        """Numbered blocks of the queued single rows in ``queue[lo:hi]``, one per run of rows
        of one ring."""
        if lo == hi:
            return None
        failed = None
        rings = queue[lo:hi:ENTRY]
        runs = [0, len(rings)]  # one ring: the common case, told by one C-level count
        if rings.count(rings[0]) != len(rings):
            runs[1:1] = [i for i in range(1, len(rings)) if rings[i] is not rings[i - 1]]
        for a, b in itertools.pairwise(runs):
            ring, part = rings[a], (lo + a * ENTRY, lo + b * ENTRY)
            try:
                values = _values(ring, queue, *part)
                data = b"".join(queue[part[0] + 1 : part[1] : ENTRY])
            except (TypeError, ValueError) as err:  # one row's value: the others are kept
                failed, good = err, []
                for i in range(*part, ENTRY):
                    try:
                        _values(ring, queue, i, i + ENTRY)
                        good += queue[i : i + ENTRY]
                    except (TypeError, ValueError):
                        pass
                values, data = _values(ring, good, 0, len(good)), b"".join(good[1::ENTRY])
            n = len(data) // (ring.dtype.itemsize * ring.n_classes)
            if n:
                probs = np.frombuffer(data, ring.dtype).reshape(n, ring.n_classes)
                blocks.append(_Block(ring, probs, None, self._numbers(n), n, values))
        return failed

    def _number(self, rows: Rows) -> _Block:
        n, ring = len(rows.probs), rows.ring
        if rows.probs.ndim != 2 or rows.probs.shape[1] != ring.n_classes:
            raise ValueError(
                f"rows of shape {rows.probs.shape} cannot join a buffer of {ring.n_classes} "
                f"classes ({', '.join(ring.labels[:6])}{', ...' if ring.n_classes > 6 else ''}): "
                "a head's output width must not change between forwards"
            )
        values = ring.cols.prepare(rows.columns, n)
        if ring.refuse_overflow:
            ring.check_room(n, self.waiting(ring))
        return _Block(rows.ring, rows.probs, rows.logits, self._numbers(n), n, values)

    def _numbers(self, n: int) -> int:
        """The first of ``n`` new sequence numbers."""
        first = self._next
        self._next = first + n
        return first

    def _write_log(self) -> None:
        """Write, then store, the numbered blocks in order (lock held); the first the sink
        refuses stops the rest and raises. A sink whose file is gone is not written again:
        the blocks are stored, and its ``SinkLostError`` raised once."""
        log, sink, lost = self._log, self.sink, None
        while log:
            block = log[0]
            if sink is not None and self.lost is None:
                seq = np.arange(block.first, block.first + block.n, dtype=np.int64)
                rows = block.ring.block(block.probs, block.logits, seq, block.values)
                try:
                    write_to_sink(sink, rows)
                except SinkLostError as err:
                    self.lost = lost = err
                except SinkError as err:
                    self.error = err
                    raise
            block.ring.store(block.probs, block.logits, block.first, block.values)
            del log[0]
        self.error = None
        if lost is not None:
            raise lost

    # -- the flush thread and the end ---------------------------------------------------------

    def flush_every(self, seconds: float) -> None:
        """Drain at least every ``seconds`` in a background thread until [`stop`][stop]."""
        if self._thread is not None:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_loop, args=(seconds, self._stop), name="probhook-flush", daemon=True
        )
        self._thread.start()

    def _flush_loop(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            try:  # queued rows, and blocks the sink refused before, reach it now
                self.drain()
            except SinkLostError as err:  # the next forward's write or flush says it
                self._unsaid = err
            except SinkError:  # still refused: they wait for the next tick, write or close
                pass
            except BaseException as err:  # not the sink's: stop() raises it
                self._failed = err
                return

    def stop(self) -> None:
        """Stop the flush thread and drain; raises what stopped the thread, or the sink's
        refusal (the rows still waiting)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            assert self._stop is not None
            self._stop.set()
            thread.join()
        self.drain()
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def __getstate__(self) -> dict[str, int]:
        with self.reading():  # rows travel stored, numbers go on where they were
            return {"next": self._next}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(start=state["next"])  # type: ignore[misc]


def _values(ring: Ring, queue: list[Any], lo: int, hi: int) -> dict[str, Any]:
    """The prepared column values of the queued single rows of ``ring`` in ``queue[lo:hi]``."""
    columns: dict[str, Any] = {
        "key": queue[lo + 2 : hi : ENTRY],
        "head": queue[lo + 3 : hi : ENTRY],
    }
    metas = queue[lo + 4 : hi : ENTRY]
    for name in ring.cols.schema:
        if name not in columns:
            columns[name] = [None if m is None else m.get(name) for m in metas]
    return ring.cols.prepare(columns, (hi - lo) // ENTRY)
