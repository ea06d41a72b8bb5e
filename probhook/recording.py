"""The hot path: from a head's forward output to rows in its buffer (and the sink).

A [`Recorder`][Recorder] serves every head of one capture. For each head it builds the forward hook
([`Recorder.forward_hook`][Recorder.forward_hook]), which turns the output's logits into
probabilities, copies them to the host once, and appends them to the head's buffer with the metadata
current in the calling context. All heads share one [`WriteQueue`][probhook.write_queue.WriteQueue],
so sequence numbers follow forward order across heads, and one sink, which a background thread keeps
no more than ``flush_seconds`` behind the forwards.

A token head's forward is checked in its hook but mapped to word rows later, together with the
next forwards (``STAGED_FORWARDS``), and at the latest at the next read, flush or stop: mapped
one at a time between a pipeline's pages, the mapping cost twice as much. Its rows are numbered
when they are mapped, so they can come after single rows of other heads from later forwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from probhook.buffer import ProbBuffer
from probhook.column_store import ColumnStore
from probhook.head_view import HeadView
from probhook.heads import HeadSpec
from probhook.options import CaptureOptions, check_memory
from probhook.sink import Sink, SinkError, open_sink
from probhook.write_queue import WriteQueue

if TYPE_CHECKING:
    import torch

    from probhook.block import ColumnKind
    from probhook.words import MappedRows

Meta = contextvars.ContextVar[dict[str, Any] | None]
STAGED_FORWARDS = 16
"""A token head's forwards mapped to rows together (at the latest): mapping one forward right
after the model ran costs about twice as much per forward, its code paths pushed out of the
CPU's caches by the pipeline's own work in between."""
ForwardHook = Callable[..., None]


class KeyList(list[Any]):
    """Keys for one batch (``cap.keys_for``): each head uses them for its next forward only."""

    def __init__(self, keys: Any) -> None:
        super().__init__(keys)
        self.used_by: set[str] = set()


class Recorder:
    """Writes the rows of one capture's heads (see the module docstring)."""

    def __init__(self, options: CaptureOptions, meta: Meta) -> None:
        self.options, self.meta = options, meta
        self.columns: dict[str, ColumnKind] = {}
        self.queue = WriteQueue()
        self.sink: Sink | None = None
        self.sink_closed = False
        self._lock = threading.Lock()
        self._inflight: list[None] = []  # one item per forward inside a hook now
        self._stop_flushing: threading.Event | None = None
        self._flusher: threading.Thread | None = None
        self._failed: Exception | None = None  # what stopped the flush thread
        self._buffers: list[ProbBuffer] = []  # each keeps the batches its sink refused
        self.activations: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def begin(self, columns: Mapping[str, ColumnKind]) -> None:
        """At start: the adapter's columns, the sink opened (its path checked now) and, with a
        sink, the thread that writes queued rows every ``flush_seconds``."""
        if self.sink_closed:
            raise RuntimeError(
                "this capture's sink was closed when its block ended; create a new capture "
                "(a new file) to capture again"
            )
        self.columns = {**columns, **self.columns}
        if self.sink is None and self.options.sink is not None:
            self.sink = open_sink(self.options.sink)
        if self.sink is not None and self._flusher is None:
            self._stop_flushing = threading.Event()
            self._flusher = threading.Thread(
                target=self._flush_loop, name="probhook-flush", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        assert self._stop_flushing is not None
        while not self._stop_flushing.wait(self.options.flush_seconds):
            try:  # queued rows, and batches the sink refused before, reach it now
                self._write_all()
            except SinkError:  # still refused: they wait for the next tick, write or close
                pass
            except Exception as err:  # not the sink's: stop() raises it
                self._failed = err
                return

    def end(self, views: Mapping[str, HeadView]) -> None:
        """At stop: wait for forwards still inside a hook, stop the flush thread, and store
        every queued row (a failing sink raises here, with the rows still queued)."""
        while self._inflight:
            time.sleep(0.001)
        if self._flusher is not None:
            assert self._stop_flushing is not None
            self._stop_flushing.set()
            self._flusher.join()
            self._flusher = None
        self._write_all()
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def _write_all(self) -> None:
        """Store the queued rows and the batches a failing sink refused before; raises while
        the sink still fails."""
        with self.queue.locked(strict=True):
            for buffer in self._buffers:
                buffer.write_unwritten()

    def close_sink(self) -> None:
        """Write what is queued, then close the sink; safe to call again after a failure."""
        self._write_all()
        if self.sink is not None and not self.sink_closed:
            try:
                self.sink.close()
            except Exception as err:  # a full disk while Parquet is written, say
                raise SinkError(
                    f"{self.sink!r} could not be closed ({type(err).__name__}: {err}); every "
                    "row was written to it: call close() again to finish it"
                ) from err
            self.sink_closed = True

    def declare(self, meta: Mapping[str, Any], views: Mapping[str, HeadView]) -> None:
        """Columns for the values of ``cap.key(key, **meta)``, declared before any forward."""
        for name, value in meta.items():
            kind: ColumnKind = (
                "int" if isinstance(value, int) and not isinstance(value, bool) else "str"
            )
            if name in self.columns:
                continue
            for view in views.values():
                if view.buffer is not None:
                    raise ValueError(
                        f"column {name!r} is new, but head {view.name!r} already holds rows "
                        f"without it; pass every column from the first cap.key(...) on"
                    )
            self.columns[name] = kind

    # -- the hook -------------------------------------------------------------------------------

    def forward_hook(self, spec: HeadSpec, view: HeadView) -> ForwardHook:
        """The forward hook of one head; refuses at once what it can tell before a forward.
        A token head's hook also takes the forward's kwargs (``_token_hook``)."""
        if spec.rows_of is not None:
            return self._token_hook(spec, view)
        import torch

        from probhook._torch import (
            known_width,
            logits_of,
            make_activation,
            resolve_activation,
            to_host,
        )

        options, meta_var, name = self.options, self.meta, spec.name
        config = spec.config if spec.config is not None else getattr(spec.module, "config", None)
        chosen = options.activation  # "auto" defers to what the integration knows
        activation = resolve_activation(
            spec.activation if chosen == "auto" and spec.activation else chosen, config
        )
        if activation == "softmax" and known_width(spec.module, config) == 1:
            raise ValueError(_ONE_COLUMN.format(name=name))
        apply, tensor = make_activation(activation, options.temperature), torch.Tensor
        queued = options.on_overflow != "error" and not options.keep_logits
        select, inflight = options.output, self._inflight
        enter, leave = inflight.append, inflight.pop  # atomic list calls: no lock per forward
        self.activations[name] = activation

        def on_forward(module: Any, args: Any, output: Any) -> None:
            # Runs on every forward: the common one-row case goes straight to the buffer.
            enter(None)
            try:
                plain = type(output) is tensor and output.ndim == 2 and select is None
                logits = output if plain and output.is_floating_point() else None
                if logits is None:
                    logits = logits_of(output, name, select)
                probs = apply(logits)
                if not queued:  # kept logits or refused overflow: the general path
                    self._record(spec, view, probs, logits)
                    return
                host = to_host(probs)
                meta = meta_var.get()
                buffer = view.buffer
                if (
                    buffer is not None
                    and len(host) == 1
                    and (meta is None or type(meta.get("key")) is not KeyList)
                ):
                    key = None if meta is None else meta.get("key")
                    row = host[0]
                    if row.dtype is not buffer.dtype:  # float16/64 storage: queue it converted
                        row = row.astype(buffer.dtype)
                    buffer.append(row, key, name, meta)  # positional: the cheapest call
                else:
                    self._record(spec, view, probs, logits, host)
            finally:
                leave()

        return on_forward

    def _token_hook(self, spec: HeadSpec, view: HeadView) -> ForwardHook:
        """A token head: ``(batch, tokens, classes)`` becomes the rows its mapper makes.

        The hook checks the forward (the mapper's checks raise in the forward) and stages the
        mapping in the write queue: ``STAGED_FORWARDS`` forwards are mapped together, at the
        latest at the next read, flush or stop, with the code paths warm (see the module
        docstring). The head's first forward is mapped at once, so that what only its rows
        tell (their width against the labels, the memory they need) is refused in it; with
        ``on_overflow="error"`` every forward is, so that the one that overflows fails.
        """
        from probhook._torch import logits_of, make_activation, resolve_activation, to_host
        from probhook.words import TokenForward

        options, meta_var, name, rows_of = self.options, self.meta, spec.name, spec.rows_of
        assert rows_of is not None
        config = spec.config if spec.config is not None else getattr(spec.module, "config", None)
        activation = self.activations[name] = resolve_activation(options.activation, config)
        apply = make_activation(activation, options.temperature)
        enter, leave = self._inflight.append, self._inflight.pop
        stage, rule = self.stage_rows, options.word_rule

        def activate(logits: torch.Tensor) -> Any:
            return to_host(apply(logits))

        def keep(logits: torch.Tensor) -> Any:
            return to_host(logits.float())

        kept = keep if options.keep_logits else None

        def on_forward(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            enter(None)
            try:
                # a copy: the caller owns the output and may change it before the rows are made
                logits = logits_of(output, name, options.output, ndim=3).detach().clone()
                meta = meta_var.get()
                make_rows = rows_of(TokenForward(logits, activate, kept, kwargs, meta, rule))
                if make_rows is not None:  # None: not attributable
                    stage(spec, view, meta, make_rows)
            finally:
                leave()

        return on_forward

    def stage_rows(self, spec: HeadSpec, view: HeadView, meta: Mapping[str, Any] | None,
                   make_rows: Callable[[], MappedRows]) -> None:  # fmt: skip
        """Stage the rows of a token forward or a detector's elements (see ``_token_hook``)."""
        queue = self.queue
        if self.options.on_overflow == "error" or view.buffer is None:
            with queue.locked(keep=True):  # a sink refusing earlier rows: kept too
                self._token_rows(spec, view, meta, make_rows)
            return
        queue.stage(functools.partial(self._token_rows, spec, view, meta, make_rows))
        if len(queue.staged) >= STAGED_FORWARDS:
            queue.drain_now()

    def _token_rows(
        self,
        spec: HeadSpec,
        view: HeadView,
        meta: Mapping[str, Any] | None,
        make_rows: Callable[[], MappedRows],
    ) -> None:
        """Make and store one token forward's rows (the queue's lock held)."""
        mapped = make_rows()
        if not len(mapped.probs):  # no words
            return
        buffer = view.buffer  # not ``or``: an empty buffer is falsy, and len() takes the lock
        if buffer is None:
            buffer = self._allocate(spec, view, mapped.probs.shape[1])
        columns = {k: v for k, v in (meta or {}).items() if k != "key" and k in buffer.schema}
        columns.update(mapped.columns)
        buffer.store_batch(mapped.probs, keys=mapped.keys, head=spec.name,
                           logits=mapped.logits, **columns)  # fmt: skip

    def _record(
        self,
        spec: HeadSpec,
        view: HeadView,
        probs: torch.Tensor,
        logits: torch.Tensor,
        host: Any = None,
    ) -> None:
        """The general path: batches, per-row keys, kept logits, spill and error policies."""
        from probhook._torch import to_host

        raw = None
        if self.options.keep_logits:
            import torch

            both = to_host(torch.stack((probs, logits.detach().float())))  # one host copy
            host, raw = both[0], both[1]
        elif host is None:
            host = to_host(probs)
        buffer = view.buffer or self._allocate(spec, view, host.shape[1])
        meta = self.meta.get() or {}
        keys = meta.get("key")
        if type(keys) is KeyList:
            if spec.name in keys.used_by:  # keys_for() labels the next forward only
                keys = None
            else:
                keys.used_by.add(spec.name)
                if len(keys) != len(host):
                    raise ValueError(
                        f"keys_for() gave {len(keys)} keys but head {spec.name!r} produced "
                        f"{len(host)} rows"
                    )
                keys = list(keys)
        columns = {k: v for k, v in meta.items() if k != "key" and k in buffer.schema}
        # not append_batch: a sink refusing the queued rows must not drop this forward's rows
        with self.queue.locked(keep=True):
            buffer.store_batch(host, keys=keys, head=spec.name, logits=raw, **columns)

    def _allocate(self, spec: HeadSpec, view: HeadView, n_classes: int) -> ProbBuffer:
        with self._lock:
            if view.buffer is not None:
                return view.buffer
            if n_classes == 1 and self.activations.get(spec.name) == "softmax":
                raise ValueError(_ONE_COLUMN.format(name=spec.name))
            labels = view.labels or None
            if labels is not None and len(labels) != n_classes:
                raise ValueError(
                    f"head {spec.name!r} has {n_classes} outputs but {len(labels)} labels "
                    f"were given: {list(labels)}"
                )
            options = self.options
            schema = {"key": "str", "head": "str", **self.columns, **spec.columns}
            per_class = np.dtype(options.dtype).itemsize + 4 * options.keep_logits
            row_bytes = n_classes * per_class + 8 + ColumnStore.row_nbytes(schema)
            check_memory(options.capacity, row_bytes)  # before the arrays exist
            buffer = ProbBuffer(
                n_classes,
                options.capacity,
                labels=labels,
                dtype=options.dtype,
                columns={**self.columns, **spec.columns},
                on_overflow=options.on_overflow,
                sink=self.sink,
                keep_logits=options.keep_logits,
                queue=self.queue,
                flush_rows=options.flush_rows,
            )
            view.attach(buffer)
            self._buffers.append(buffer)
            return buffer


_ONE_COLUMN = (
    "head {name!r} has one output: a softmax over one class is always 1.0. For a yes/no score "
    "use activation='sigmoid' (the probability of the positive class)"
)


_HOOKED: dict[int, list[int]] = {}  # id(module) -> threads of the active captures hooking it
_HOOKED_LOCK = threading.Lock()


@contextlib.contextmanager
def sharing_check(spec: HeadSpec) -> Iterator[None]:
    """Warn when captures started in two threads hook one module: each sees every forward of
    it, from any thread (the documented rule), so their rows mix."""
    module, thread = id(spec.module), threading.get_ident()
    with _HOOKED_LOCK:
        threads = _HOOKED.setdefault(module, [])
        others = set(threads) - {thread}
        threads.append(thread)
    if others:
        warnings.warn(
            f"{spec.name} is also hooked by a capture started in another thread; a capture "
            "sees every forward of the modules it hooks, from any thread, so both captures get "
            "both threads' rows. Give each thread its own model, or one capture with keys",
            RuntimeWarning,
            stacklevel=4,
        )
    try:
        yield
    finally:
        with _HOOKED_LOCK:
            threads.remove(thread)
            if not threads:
                del _HOOKED[module]
