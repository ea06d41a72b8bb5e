"""The hooks: one object per head that turns each forward's output into rows for the writer.

* A [`PageHook`][PageHook] (``(batch, classes)`` logits: one row per input) activates the logits,
  copies them to the host once, and hands a single row to the writer's queue with the metadata
  current in the calling context (one C call), a batch to the writer directly.
* A [`MappedHook`][MappedHook] (a word or element head) copies the logits, lets the head's mapper
  check the forward (a mismatch raises in the forward), and stages the mapping with the writer:
  ``STAGED_FORWARDS`` forwards are mapped together, at the latest at the next read, flush or
  stop (mapped one at a time between a pipeline's pages, the mapping cost twice as much). A
  head's first forward is mapped at once, so that what only its rows tell (their width against
  the labels) is refused in it; with ``on_overflow="error"`` every forward is.

Each hook holds its head's spec, view and registration handle; what its per-forward path reads
is kept in its slots, resolved once when the capture starts.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from threading import get_ident
from typing import TYPE_CHECKING, Any

from probhook.column_store import Broadcast
from probhook.head_view import HeadView
from probhook.heads import Forward, HeadSpec
from probhook.options import CaptureOptions
from probhook.writer import ENTRY, Rows

if TYPE_CHECKING:
    from probhook.heads import MappedRows
    from probhook.recording import Recorder

HOLD = "probhook.hold"
"""A metadata entry: a list in which this context's rows wait until the integration that set it
hands them on (``Capture.release``), once their page's outcome is known."""
STAGED_FORWARDS = 16
"""A mapped head's forwards mapped to rows together (at the latest): mapping one forward right
after the model ran costs about twice as much per forward, its code paths pushed out of the
CPU's caches by the pipeline's own work in between."""


class KeyList(list[Any]):
    """Keys for one batch (``cap.keys_for``): each head uses them for its next forward only."""

    def __init__(self, keys: Any) -> None:
        super().__init__(keys)
        self.used_by: set[str] = set()


def activation(options: CaptureOptions, spec: HeadSpec) -> str:
    """The head's activation: the option, or with ``"auto"`` what its integration knows its
    framework applies, else the config's rule (sigmoid for multi-label)."""
    from probhook._torch import resolve_activation

    chosen = options.activation
    config = spec.config if spec.config is not None else getattr(spec.module, "config", None)
    return resolve_activation(spec.activation if chosen == "auto" and spec.activation else chosen,
                              config)  # fmt: skip


def warn_if_training(spec: HeadSpec) -> None:
    """Warn when the head's model is in training mode with dropout (or batch norm) active:
    its distributions change from call to call."""
    from probhook._torch import training_layers

    layers = training_layers(spec.module)
    if layers:
        warnings.warn(
            f"{spec.name} is in training mode with {layers} active, so the same input gives "
            "another distribution each time; call model.eval() before capturing",
            RuntimeWarning,
            stacklevel=5,
        )


class PageHook:
    """The forward hook of a head with ``(batch, classes)`` logits: one row per input."""

    __slots__ = (
        "_apply",
        "_inflight",
        "_logits_of",
        "_meta",
        "_name",
        "_pending",
        "_push",
        "_queued",
        "_select",
        "_tensor",
        "_to_host",
        "_writer",
        "handle",
        "recorder",
        "spec",
        "view",
    )  # fmt: skip

    def __init__(self, recorder: Recorder, spec: HeadSpec, view: HeadView) -> None:
        import torch

        from probhook._torch import known_width, logits_of, make_activation, to_host

        self.recorder, self.spec, self.view = recorder, spec, view
        self.handle: Any = None
        options = recorder.options
        act = activation(options, spec)
        config = spec.config if spec.config is not None else getattr(spec.module, "config", None)
        width = known_width(spec.module, config)
        if act == "softmax" and width == 1:
            raise ValueError(ONE_COLUMN.format(name=spec.name))
        labels = view.labels
        if labels and width is not None and len(labels) != width:
            raise ValueError(
                f"head {spec.name!r} has {width} outputs but {len(labels)} labels were given: "
                f"{list(labels)}"
            )
        self._apply = make_activation(act, options.temperature)
        self._queued = options.on_overflow != "error" and not options.keep_logits
        self._select, self._name, self._tensor = options.output, spec.name, torch.Tensor
        self._logits_of, self._to_host, self._meta = logits_of, to_host, recorder.meta
        writer = self._writer = recorder.writer
        self._push, self._pending, self._inflight = writer.push, writer.pending, recorder.inflight

    def register(self, stack: contextlib.ExitStack) -> None:
        """Hook the head's module until ``stack`` closes."""
        self.handle = self.spec.module.register_forward_hook(self.on_forward)
        stack.callback(self.handle.remove)

    def on_forward(self, module: Any, args: Any, output: Any) -> None:
        """Runs on every forward: the common one-row case goes straight to the writer's queue."""
        inflight, thread = self._inflight, get_ident()
        inflight.append(thread)  # atomic list calls: no lock per forward
        try:
            plain = type(output) is self._tensor and output.ndim == 2 and self._select is None
            logits = output if plain and output.is_floating_point() else None
            if logits is None:
                logits = self._logits_of(output, self._name, self._select)
            probs = self._apply(logits)
            if not self._queued:  # kept logits or refused overflow: the general path
                self._record(probs, logits)
                return
            host = self._to_host(probs)
            meta = self._meta.get()
            buffer = self.view.buffer
            if (
                buffer is not None
                and host.shape == buffer.one_row  # (1, width): another width is refused
                and (meta is None or type(meta.get("key")) is not KeyList)
            ):
                key = None if meta is None else meta.get("key")
                row = host[0]
                if row.dtype is not buffer.dtype:  # float16/64 storage: queue it converted
                    row = row.astype(buffer.dtype)
                entry = (buffer.ring, row.tobytes(), key, self._name, meta)
                held = None if meta is None else meta.get(HOLD)
                if held is not None:
                    held.append((self._push, entry))
                    return
                self._push(entry)
                if len(self._pending) >= buffer.queue_limit:
                    self._writer.drain()
            else:
                self._record(probs, logits, host)
        finally:
            inflight.remove(thread)

    def _record(self, probs: Any, logits: Any, host: Any = None) -> None:
        """The general path: batches, per-row keys, kept logits, the error policy."""
        recorder, spec = self.recorder, self.spec
        raw = None
        if recorder.options.keep_logits:
            import torch

            both = self._to_host(torch.stack((probs, logits.detach().float())))  # one copy
            host, raw = both[0], both[1]
        elif host is None:
            host = self._to_host(probs)
        buffer = self.view.buffer or recorder.buffer_for(spec, self.view, host.shape[1])
        meta = self._meta.get() or {}
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

        def rows() -> Rows:  # the metadata as it is when the rows are handed on
            # a context's values (a tuple key too) are one value for every row of the forward
            columns: dict[str, Any] = {k: Broadcast(v) for k, v in meta.items()
                                       if k in buffer.schema}  # fmt: skip
            columns.update(key=keys if type(keys) is list else Broadcast(keys), head=spec.name)
            return Rows(buffer.ring, host, raw, columns)

        held = meta.get(HOLD)
        if held is not None:
            held.append((self._writer.write, rows))
            return
        # a sink refusing older rows raises here, with this forward's rows kept behind them
        self._writer.write(rows(), copy=False)


class MappedHook:
    """The forward hook of a word or element head: the spec's mapper makes its rows (see the
    module docstring)."""

    __slots__ = ("_activate", "_at_once", "_keep", "handle", "recorder", "spec", "view")

    def __init__(self, recorder: Recorder, spec: HeadSpec, view: HeadView) -> None:
        from probhook._torch import make_activation, to_host

        self.recorder, self.spec, self.view = recorder, spec, view
        self.handle: Any = None
        options = recorder.options
        apply = make_activation(activation(options, spec), options.temperature)

        def activate(logits: Any) -> Any:
            return to_host(apply(logits))

        def keep(logits: Any) -> Any:
            return to_host(logits.float())

        self._activate, self._keep = activate, keep if options.keep_logits else None
        # "error" refuses the rows of the forward that overflows, so that forward maps them
        self._at_once = options.on_overflow == "error"

    def register(self, stack: contextlib.ExitStack) -> None:
        """Hook the head's module (with the forward's kwargs) until ``stack`` closes."""
        self.handle = self.spec.module.register_forward_hook(self.on_forward, with_kwargs=True)
        stack.callback(self.handle.remove)

    def on_forward(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        """Check the forward and stage its mapping (or map it now: see the module docstring)."""
        from probhook._torch import logits_of

        recorder, spec = self.recorder, self.spec
        options = recorder.options
        thread = get_ident()
        recorder.inflight.append(thread)
        try:
            # a copy: the caller owns the output and may change it before the rows are made
            logits = logits_of(output, spec.name, options.output, ndim=3).detach().clone()
            meta = recorder.meta.get()
            forward = Forward(logits, self._activate, self._keep, kwargs, meta, options.word_rule)
            make_rows = spec.rows_of(forward)  # type: ignore[misc]
            if make_rows is not None:  # None: not attributable
                self.hand(make_rows, meta)
        finally:
            recorder.inflight.remove(thread)

    def hand(self, make_rows: Callable[[], MappedRows], meta: Mapping[str, Any] | None) -> None:
        """Hand one forward's mapping to the writer: staged, or at once (the head's first
        forward, or ``on_overflow="error"``), or kept in the context's ``HOLD`` list. An
        integration whose rows can be keyed only after the forward (a detector's elements)
        hands them the same way (``Capture.stage_rows``)."""
        job = _Staged(self, make_rows, meta)
        writer = self.recorder.writer
        at_once = self._at_once or self.view.buffer is None
        held = None if meta is None else meta.get(HOLD)
        if held is not None:
            held.append((writer.write if at_once else writer.stage, job))
            return
        if at_once:
            writer.write(job, copy=False)
            return
        writer.stage(job)
        if len(writer.pending) >= ENTRY * STAGED_FORWARDS:  # one entry per forward
            writer.drain()

    def rows(self, mapped: MappedRows, meta: Mapping[str, Any] | None) -> Rows | None:
        """One forward's mapped rows for the writer (its lock held)."""
        if not len(mapped.probs):  # no words
            return None
        buffer = self.view.buffer
        if buffer is None:  # not ``or``: an empty buffer is falsy, and len() takes the lock
            buffer = self.recorder.buffer_for(self.spec, self.view, mapped.probs.shape[1])
        columns: dict[str, Any] = {k: Broadcast(v) for k, v in (meta or {}).items()
                                   if k in buffer.schema}  # fmt: skip
        columns.update(mapped.columns)
        columns.update(key=mapped.keys, head=self.spec.name)
        return Rows(buffer.ring, mapped.probs, mapped.logits, columns)


class _Staged:
    """One mapped forward waiting in the writer's queue: its hook, its mapping and the
    metadata current when it ran."""

    __slots__ = ("hook", "make_rows", "meta")

    def __init__(self, hook: MappedHook, make_rows: Any, meta: Mapping[str, Any] | None) -> None:
        self.hook, self.make_rows, self.meta = hook, make_rows, meta

    def __call__(self) -> Rows | None:
        return self.hook.rows(self.make_rows(), self.meta)


ONE_COLUMN = (
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
