"""``capture_probs``: forward hooks that keep every prediction's full distribution.

>>> import torch
>>> from probhook import capture_probs
>>> model = torch.nn.Linear(4, 3)
>>> with capture_probs(model, labels=["a", "b", "c"]) as cap:
...     with cap.key("doc-7"):
...         _ = model(torch.randn(2, 4))
>>> cap.probs.shape, cap.keys
((2, 3), ['doc-7', 'doc-7'])
>>> cap.get("doc-7").labels
('a', 'b', 'c')
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import numpy as np

from probhook.buffer import OverflowPolicy, ProbBuffer
from probhook.distribution import Distribution
from probhook.heads import (
    ACTIVATIONS,
    HeadSpec,
    Selector,
    logits_of,
    make_activation,
    resolve_activation,
    to_host,
)
from probhook.integrations import Adapter, adapter_for
from probhook.rows import SeqCounter, Sink
from probhook.views import HeadView

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

F = TypeVar("F", bound=Callable[..., Any])


class CaptureOptions(TypedDict, total=False):
    """The options of :func:`capture_probs` and :class:`Capture` (documented there)."""

    capacity: int
    heads: Selector | None
    activation: str
    temperature: float
    labels: Sequence[str] | Mapping[str, Sequence[str]] | None
    dtype: str
    on_overflow: OverflowPolicy
    sink: Sink | str | os.PathLike[str] | None
    keep_logits: bool


class Capture(HeadView):
    """A set of forward hooks and the distributions they captured.

    Use it as a context manager, a decorator, or by hand with :meth:`start` / :meth:`stop`:

    >>> import torch
    >>> from probhook import capture_probs
    >>> model = torch.nn.Linear(4, 3)
    >>> cap = capture_probs(model, temperature=2.0)
    >>> cap.start()
    >>> _ = model(torch.randn(5, 4))
    >>> cap.stop()
    >>> len(cap), cap.labels
    (5, ['0', '1', '2'])
    >>> bool(abs(cap.probs.sum(axis=1) - 1).max() < 1e-6)
    True
    """

    def __init__(
        self,
        target: Any,
        *,
        capacity: int = 10_000,
        heads: Selector | None = None,
        activation: str = "auto",
        temperature: float = 1.0,
        labels: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        dtype: str = "float32",
        on_overflow: OverflowPolicy = "overwrite",
        sink: Sink | str | os.PathLike[str] | None = None,
        keep_logits: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not (
            isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if sink is not None and on_overflow == "error":
            raise ValueError(
                "sink= spills rows the buffer cannot keep; it cannot go with on_overflow='error'"
            )
        ProbBuffer.check_options(capacity, dtype)  # before any hook exists
        super().__init__("capture")
        self.target, self.selector = target, heads
        self.activation, self.temperature = activation, float(temperature)
        self.capacity_per_head, self.dtype, self.keep_logits = capacity, dtype, keep_logits
        self.on_overflow: OverflowPolicy = "spill" if sink is not None else on_overflow
        self._labels_arg = labels
        self._sink_arg = sink
        self.sink: Sink | None = None
        self.heads: dict[str, HeadView] = {}
        self._counter = SeqCounter()
        self._meta: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
            "probhook_meta", default=None
        )
        self._stack: contextlib.ExitStack | None = None
        self._lock = threading.Lock()
        self._appended_at_start: dict[str, int] = {}
        self._adapter: Adapter | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the hooks are registered now."""
        return self._stack is not None

    def start(self, target: Any = None) -> None:
        """Register the hooks (all or none); ``target`` overrides the one given at creation."""
        if self._stack is not None:
            raise RuntimeError(
                "this capture is already active; stop() it first, or create a second "
                "capture_probs(...) to capture the same model twice"
            )
        target = self.target if target is None else target
        if target is None or isinstance(target, str):
            raise TypeError(
                f"capture_probs(target={target!r}) names a parameter: use it as a decorator, or "
                "pass a model to start()"
            )
        adapter = adapter_for(target)
        specs = adapter.heads(self.selector)
        known = set(self.heads)
        try:
            with contextlib.ExitStack() as stack:
                adapter.install(self, stack)
                for spec in specs:
                    self.hook(spec, stack)
                self._stack, self._adapter = stack.pop_all(), adapter
        except BaseException:
            for name in set(self.heads) - known:  # no empty head left by a failed start
                del self.heads[name]
            raise
        # rows appended so far, per head: a head whose count does not move saw no forward
        self._appended_at_start = {s.name: self.heads[s.name].appended for s in specs}

    def stop(self, *, warn: bool = True) -> None:
        """Remove every hook and instance patch; write pending rows to the sink."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            stack.close()
        finally:
            for view in self.heads.values():
                if view.buffer is not None:
                    view.buffer.flush()
        if warn:
            for name, before in self._appended_at_start.items():
                if self.heads[name].appended == before:
                    warnings.warn(
                        f"no forward of {name} ran inside the capture; a lazy iterator "
                        "consumed after the block captures nothing",
                        RuntimeWarning,
                        stacklevel=3,
                    )

    def close(self) -> None:
        """Stop, and close the sink (the file is complete once this returns)."""
        self.stop(warn=False)
        if self.sink is not None:
            self.sink.close()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(warn=exc_type is None)
        if self.sink is not None:
            self.sink.close()

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call runs inside this capture; ``fn.capture`` is the capture."""
        path: list[str] = self.target.split(".") if isinstance(self.target, str) else []
        param = path[0] if path else None
        signature = inspect.signature(fn)
        if param is not None and param not in signature.parameters:
            raise TypeError(f"{fn.__qualname__} has no parameter {param!r} to capture")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = None
            if param is not None:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                target = bound.arguments[param]
                for attr in path[1:]:  # "self.model" on a method
                    target = getattr(target, attr)
            self.start(target)
            ok = False
            try:
                result = fn(*args, **kwargs)
                ok = True
                return result
            finally:
                self.stop(warn=ok)

        wrapper.capture = self  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    # -- keys ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def key(self, key: Hashable, **meta: Any) -> Iterator[None]:
        """Rows captured inside the block carry ``key`` (and ``meta`` columns)."""
        token = self._meta.set({"key": key, **meta})
        try:
            yield
        finally:
            self._meta.reset(token)

    def keys_for(self, keys: Sequence[Hashable]) -> contextlib.AbstractContextManager[None]:
        """Rows of the next batch carry one key each, in batch order."""
        return self.key(list(keys))  # type: ignore[arg-type]

    def set_meta(self, meta: dict[str, Any] | None) -> contextvars.Token[dict[str, Any] | None]:
        """For integrations: make ``meta`` current in this thread/context; returns a reset token."""
        return self._meta.set(meta)

    def reset_meta(self, token: contextvars.Token[dict[str, Any] | None]) -> None:
        """For integrations: undo :meth:`set_meta`."""
        self._meta.reset(token)

    # -- hooks --------------------------------------------------------------------------------

    def hook(self, spec: HeadSpec, stack: contextlib.ExitStack | None = None) -> None:
        """Register the forward hook for ``spec``; it is removed when the capture stops.

        Integrations call this while the capture runs to follow a module swapped in mid-run.
        """
        stack = stack or self._stack
        if stack is None:
            raise RuntimeError("hook() needs an active capture or an explicit ExitStack")
        activation = resolve_activation(self.activation, spec.module)
        view = self.heads.get(spec.name)
        if view is None:
            view = self.heads[spec.name] = HeadView(spec.name, self._key_of)
        view._labels = self._labels_for(spec)

        import torch

        name, meta_var, keep_logits = spec.name, self._meta, self.keep_logits
        apply, tensor = make_activation(activation, self.temperature), torch.Tensor

        def on_forward(module: Any, args: Any, output: Any) -> None:
            # Runs on every forward: the common one-row case goes straight to the buffer.
            plain = type(output) is tensor and output.ndim == 2
            probs = apply(output if plain else logits_of(output, name))
            if keep_logits:  # probabilities and logits leave the device in one copy
                self._record(spec, view, probs, output)
                return
            host = to_host(probs)
            buffer = view.buffer
            meta = meta_var.get()
            if (
                buffer is not None
                and buffer.fast_rows
                and len(host) == 1
                and (meta is None or type(meta.get("key")) is not list)
            ):
                buffer.append_row(host[0], meta, name)
            else:
                self._record(spec, view, probs, output, host)

        handle = spec.module.register_forward_hook(on_forward)
        stack.callback(handle.remove)

    def _labels_for(self, spec: HeadSpec) -> tuple[str, ...] | None:
        labels = self._labels_arg
        if isinstance(labels, Mapping):
            labels = labels.get(spec.name)
        return tuple(map(str, labels)) if labels is not None else spec.labels

    def _record(
        self, spec: HeadSpec, view: HeadView, probs: torch.Tensor, output: Any, host: Any = None
    ) -> None:
        """The general path: batches, per-row keys, kept logits, spill and error policies."""
        if self.keep_logits:
            import torch

            logits = logits_of(output, spec.name)
            both = to_host(torch.stack((probs, logits.detach().float())))  # one host copy
            host, raw = both[0], both[1]
        else:
            host, raw = (to_host(probs) if host is None else host), None
        buffer = view.buffer or self._allocate(spec, view, host.shape[1])
        meta = self._meta.get() or {}
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
            labels = view._labels
            if labels is not None and len(labels) != n_classes:
                raise ValueError(
                    f"head {spec.name!r} has {n_classes} outputs but {len(labels)} labels "
                    f"were given: {labels}"
                )
            if self.sink is None and self._sink_arg is not None:
                from probhook.export import open_sink

                self.sink = open_sink(self._sink_arg)
            view.buffer = ProbBuffer(
                n_classes,
                self.capacity_per_head,
                labels=labels,
                dtype=self.dtype,
                columns=dict(self._adapter.columns) if self._adapter else {},
                on_overflow=self.on_overflow,
                sink=self.sink,
                keep_logits=self.keep_logits,
                seq_counter=self._counter,
            )
            return view.buffer

    def _key_of(self, key: Any) -> Any:
        return self._adapter.key_of(key) if self._adapter is not None else key

    # -- reads: a single head's interface, or a clear error naming the heads ----------------------

    def _single(self) -> HeadView:
        if len(self.heads) == 1:
            return next(iter(self.heads.values()))
        if not self.heads:
            return HeadView("capture")
        raise ValueError(
            f"this capture has {len(self.heads)} heads ({', '.join(self.heads)}); "
            "read one through cap.heads[name]"
        )

    @property
    def buffer(self) -> ProbBuffer | None:
        """The single head's buffer (None before the first forward)."""
        return self._single().buffer if self.heads else None

    @buffer.setter
    def buffer(self, value: ProbBuffer | None) -> None:
        if value is not None:
            raise AttributeError("a capture's buffers belong to its heads")

    @property
    def labels(self) -> list[str]:
        """The single head's class names, in column order."""
        return self._single().labels

    def get(self, key: Any) -> Distribution | None:
        """The single head's most recent distribution for ``key`` (a page, image or id)."""
        return self._single().get(key)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        heads = ", ".join(f"{n}: {len(v)} rows" for n, v in self.heads.items()) or "no heads yet"
        return f"<Capture {state}, {heads}, capacity {self.capacity_per_head}/head>"


def capture_probs(target: Any = None, **options: Unpack[CaptureOptions]) -> Capture:
    """Capture the full probability distribution of every forward of ``target``'s classifier heads.

    ``target`` is a ``torch.nn.Module`` (a Hugging Face ``*ForSequenceClassification`` or any
    module returning ``(batch, classes)`` logits), a list of modules, a deepdoctection pipeline,
    component or LM wrapper, or, for a decorator, the name of the decorated function's parameter
    that holds the model (``"self.model"`` on a method).

    >>> import torch
    >>> from probhook import capture_probs
    >>> model = torch.nn.Linear(4, 2)
    >>> @capture_probs(target="net", labels=["no", "yes"])
    ... def predict(net, x):
    ...     return net(x)
    >>> _ = predict(model, torch.randn(3, 4))
    >>> len(predict.capture), predict.capture.get(None) is not None
    (3, True)

    The options are keyword-only and the same for :class:`Capture`.

    Other Parameters:
        capacity (int): rows kept per head (a ring buffer: the oldest go first, counted in
            ``evicted``).
        heads (Selector | None): which modules to hook: dotted name, glob, module type,
            predicate, or a list of these.
        activation (str): ``"auto"`` (softmax; sigmoid for multi-label HF configs),
            ``"softmax"``, ``"sigmoid"`` or ``"none"`` (keep logits).
        temperature (float): logits are divided by it before the activation.
        labels (Sequence[str] | Mapping | None): class names in column order (or
            ``{head: names}``); default: the HF config's ``id2label``, else ``"0" .. "C-1"``.
        dtype (str): storage dtype of the probabilities: ``float32``, ``float16`` or ``float64``.
        on_overflow (OverflowPolicy): ``"overwrite"``, ``"error"`` or ``"spill"`` (see
            :class:`ProbBuffer`).
        sink (Sink | str | os.PathLike | None): a :class:`~probhook.rows.Sink` or a file path
            (``.parquet`` or ``.arrows``) that receives every row; implies ``on_overflow="spill"``.
        keep_logits (bool): also keep raw logits (for temperature fitting); costs 4 bytes per
            class per row more.
    """
    return Capture(target, **options)
