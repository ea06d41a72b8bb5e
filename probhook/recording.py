"""The recording side of a capture: its hooks, the buffers they fill, its writer and sink.

A [`Recorder`][Recorder] serves every head of one capture: it makes their hooks
([`probhook.hooks`][probhook.hooks]), gives each head its buffer at its first forward, and owns
the capture's [`Writer`][probhook.writer.Writer] (one for all heads, so sequence numbers follow
forward order across heads) and its sink: opened when the capture starts, closed when it ends.
"""

from __future__ import annotations

import contextvars
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from probhook.arrow_rows import check_column_name
from probhook.buffer import ProbBuffer
from probhook.column_store import ColumnStore
from probhook.head_view import HeadView
from probhook.heads import HeadSpec
from probhook.hooks import (
    ONE_COLUMN,
    STAGED_FORWARDS,
    MappedHook,
    PageHook,
    activation,
    warn_if_training,
)
from probhook.options import CaptureOptions, check_memory, check_value
from probhook.sink import FileSink, Sink, SinkError, SinkLostError, open_sink
from probhook.writer import ENTRY, Writer

if TYPE_CHECKING:
    from probhook.block import ColumnKind
    from probhook.heads import MappedRows

Meta = contextvars.ContextVar[dict[str, Any] | None]


class Recorder:
    """The hooks, buffers, writer and sink of one capture (see the module docstring)."""

    def __init__(self, options: CaptureOptions, meta: Meta) -> None:
        self.options, self.meta = options, meta
        self.columns: dict[str, ColumnKind] = {}
        self.writer = Writer()
        self.sink_closed = False
        # the thread of each forward inside a hook now (one interrupted between entering and
        # its ``try`` stays listed: a thread waits only for the others)
        self.inflight: list[int] = []
        self._lock = threading.Lock()
        self._staged: dict[str, MappedHook] = {}  # the hooks of staged heads, never registered

    @property
    def sink(self) -> Sink | None:
        """Where every row is written, once the capture started."""
        return self.writer.sink

    # -- lifecycle ------------------------------------------------------------------------------

    def begin(self, columns: Mapping[str, ColumnKind], heads: list[str]) -> bool:
        """At start: the adapter's columns, the sink opened (each head's file checked and
        locked now, in the order of ``heads``) and, with a sink, the thread that writes queued
        rows every ``flush_seconds``. Returns whether the sink was opened now (see
        [`undo_begin`][undo_begin])."""
        if self.sink_closed:
            raise RuntimeError(
                "this capture's sink was closed when its block ended; create a new capture "
                "(a new file) to capture again"
            )
        opened = self.writer.sink is None and self.options.sink is not None
        if opened:
            self.writer.sink = open_sink(self.options.sink)
        if isinstance(self.writer.sink, FileSink):
            try:
                self.writer.sink.open_heads(heads)
            except BaseException:
                self.undo_begin(opened)
                raise
        self.columns = {**columns, **self.columns}
        if self.writer.sink is not None:
            self.writer.flush_every(self.options.flush_seconds)
        return opened

    def undo_begin(self, opened: bool) -> None:
        """A start failed after [`begin`][begin]: no thread left running, and a sink file this
        start opened (no row written to it yet) closed and its stream removed."""
        self.writer.stop()
        sink = self.writer.sink
        if opened and isinstance(sink, FileSink):
            self.writer.sink = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no row was written": nothing was started
                sink.close()

    def end(self) -> None:
        """At stop: wait for forwards still inside a hook, stop the flush thread, and store
        every queued row (a failing sink raises here, with the rows still queued)."""
        me = threading.get_ident()
        while any(thread != me for thread in self.inflight):
            time.sleep(0.001)
        self.writer.stop()

    def close_sink(self) -> None:
        """Write what is queued, then close the sink; safe to call again after a failure."""
        self.writer.drain()
        sink = self.writer.sink
        if sink is not None and not self.sink_closed:
            try:
                sink.close()
            except SinkLostError:
                self.sink_closed = True  # a file that is gone is said once
                raise
            except SinkError:  # can be finished: close() again tries again
                raise
            except Exception as err:  # a full disk while Parquet is written, say
                raise SinkError(
                    f"{sink!r} could not be closed ({type(err).__name__}: {err}); every "
                    "row was written to it: call close() again to finish it"
                ) from err
            self.sink_closed = True

    def declare(self, meta: Mapping[str, Any], views: Mapping[str, HeadView]) -> None:
        """Columns for the values of ``cap.key(key, **meta)``: checked now (a name of
        probhook's own, a value a file cannot hold, a value of another kind than the column's
        first), declared before the first row of any head."""
        for name, value in meta.items():
            kind = self.columns.get(name)
            if kind is None:
                check_column_name(name)
                kind = "int" if type(value) is int else "str"
                check_value(name, value, kind)
                for view in views.values():
                    if view.buffer is not None:
                        raise ValueError(
                            f"column {name!r} is new, but head {view.name!r} already holds "
                            "rows without it; pass every column from the first cap.key(...) on"
                        )
                self.columns[name] = kind
            else:
                check_value(name, value, kind)

    def release(self, held: list[tuple[Callable[[Any], None], Any]]) -> None:
        """Hand rows that waited in a ``HOLD`` list to the writer, and drain when as many wait
        as a forward would drain at; the first failure raises after all are handed on."""
        writer, failed = self.writer, None
        staged = any(hand == writer.stage for hand, _ in held)
        for hand, rows in held:
            try:
                hand(rows)
            except Exception as err:  # a sink refusing: the rows are kept, said once
                failed = failed or err
        held.clear()
        if len(writer.pending) >= ENTRY * (STAGED_FORWARDS if staged else self.options.flush_rows):
            writer.drain()
        if failed is not None:
            raise failed

    # -- hooks and buffers ----------------------------------------------------------------------

    def hook(self, spec: HeadSpec, view: HeadView) -> PageHook | MappedHook:
        """The hook of one head; refuses at once what it can tell before a forward."""
        warn_if_training(spec)
        return (
            MappedHook(self, spec, view) if spec.rows_of is not None else PageHook(self, spec, view)
        )

    def stage_rows(
        self,
        spec: HeadSpec,
        view: HeadView,
        meta: Mapping[str, Any] | None,
        make_rows: Callable[[], MappedRows],
    ) -> None:
        """Rows of a staged head (no forward hook: its integration makes them once it can key
        them), handed to the writer as a mapped forward's are."""
        hook = self._staged.get(spec.name)
        if hook is None:
            hook = self._staged[spec.name] = MappedHook(self, spec, view)
        hook.hand(make_rows, meta)

    def buffer_for(self, spec: HeadSpec, view: HeadView, n_classes: int) -> ProbBuffer:
        """The head's buffer, made at its first forward (when its width is known)."""
        with self._lock:
            if view.buffer is not None:
                return view.buffer
            if n_classes == 1 and activation(self.options, spec) == "softmax":
                raise ValueError(ONE_COLUMN.format(name=spec.name))
            labels = view.labels or None
            if labels is not None and len(labels) != n_classes:
                raise ValueError(
                    f"head {spec.name!r} has {n_classes} outputs but {len(labels)} labels "
                    f"were given: {list(labels)}"
                )
            options = self.options
            columns = {**self.columns, **spec.columns}
            schema = {"key": "str", "head": "str", **columns}
            per_class = np.dtype(options.dtype).itemsize + 4 * options.keep_logits
            row_bytes = n_classes * per_class + 8 + ColumnStore.row_nbytes(schema)
            check_memory(options.capacity, row_bytes)  # before the arrays exist
            buffer = ProbBuffer(n_classes, options.capacity, labels=labels, dtype=options.dtype,
                                columns=columns, on_overflow=options.on_overflow,
                                keep_logits=options.keep_logits, writer=self.writer,
                                flush_rows=options.flush_rows)  # fmt: skip
            view.attach(buffer)
            return buffer
