"""The hot path: from a head's forward output to rows in its buffer.

A :class:`Recorder` serves every head of one capture. For each head it builds the forward hook
(:meth:`Recorder.forward_hook`), which turns the output's logits into probabilities, copies them
to the host once, and appends them to the head's buffer with the metadata current in the
calling context. All heads share one :class:`~probhook.write_queue.WriteQueue`, so sequence
numbers follow forward order across heads, and one sink.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from probhook.buffer import ProbBuffer
from probhook.head_view import HeadView
from probhook.heads import HeadSpec
from probhook.options import CaptureOptions
from probhook.sink import Sink, open_sink
from probhook.write_queue import WriteQueue

if TYPE_CHECKING:
    import torch

    from probhook.block import ColumnKind

Meta = contextvars.ContextVar[dict[str, Any] | None]
ForwardHook = Callable[[Any, Any, Any], None]


class Recorder:
    """Writes the rows of one capture's heads (see the module docstring)."""

    def __init__(self, options: CaptureOptions, meta: Meta) -> None:
        self.options, self.meta = options, meta
        self.columns: Mapping[str, ColumnKind] = {}
        self.queue = WriteQueue()
        self.sink: Sink | None = None
        self._lock = threading.Lock()

    def open_sink(self) -> None:
        """Open the sink the options name (once per capture: later starts append to it)."""
        if self.sink is None and self.options.sink is not None:
            self.sink = open_sink(self.options.sink)

    def forward_hook(self, spec: HeadSpec, view: HeadView) -> ForwardHook:
        """The forward hook of one head."""
        import torch

        from probhook._torch import logits_of, make_activation, resolve_activation, to_host

        options, meta_var, name = self.options, self.meta, spec.name
        chosen = options.activation  # "auto" defers to what the integration knows
        activation = resolve_activation(
            spec.activation if chosen == "auto" and spec.activation else chosen, spec.module
        )
        apply, tensor = make_activation(activation, options.temperature), torch.Tensor
        queued = options.on_overflow != "error" and not options.keep_logits

        def on_forward(module: Any, args: Any, output: Any) -> None:
            # Runs on every forward: the common one-row case goes straight to the buffer.
            plain = type(output) is tensor and output.ndim == 2 and output.is_floating_point()
            logits = output if plain else logits_of(output, name)
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
                and (meta is None or type(meta.get("key")) is not list)
            ):
                buffer.append(host[0], key=None if meta is None else meta.get("key"),
                              head=name, meta=meta)  # fmt: skip
            else:
                self._record(spec, view, probs, logits, host)

        return on_forward

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
        if type(keys) is list and len(keys) != len(host):
            raise ValueError(
                f"keys_for() gave {len(keys)} keys but head {spec.name!r} produced {len(host)} rows"
            )
        columns = {k: v for k, v in meta.items() if k != "key" and k in buffer.schema}
        buffer.append_batch(host, keys=keys, head=spec.name, logits=raw, **columns)

    def _allocate(self, spec: HeadSpec, view: HeadView, n_classes: int) -> ProbBuffer:
        with self._lock:
            if view.buffer is not None:
                return view.buffer
            labels = view.labels or None
            if labels is not None and len(labels) != n_classes:
                raise ValueError(
                    f"head {spec.name!r} has {n_classes} outputs but {len(labels)} labels "
                    f"were given: {list(labels)}"
                )
            options = self.options
            self.open_sink()
            buffer = ProbBuffer(
                n_classes,
                options.capacity,
                labels=labels,
                dtype=options.dtype,
                columns=dict(self.columns),
                on_overflow=options.on_overflow,
                sink=self.sink,
                keep_logits=options.keep_logits,
                queue=self.queue,
            )
            view.attach(buffer)
            return buffer

    def flush(self, views: Mapping[str, HeadView]) -> None:
        """Store every queued row and hand what the sink has not seen to it."""
        for view in views.values():
            if view.buffer is not None:
                view.buffer.flush()
