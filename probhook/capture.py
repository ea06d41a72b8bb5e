"""``capture_probs``: forward hooks that keep every prediction's full distribution.

Examples:
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
import inspect
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from probhook import element_view
from probhook.distribution import Distribution
from probhook.head_view import HeadView
from probhook.heads import HeadSpec
from probhook.hooks import KeyList, sharing_check
from probhook.integrations import Adapter, MetaToken, adapter_for, token_words
from probhook.options import CaptureOptions, check_value
from probhook.recording import Recorder

F = TypeVar("F", bound=Callable[..., Any])


def _one_head(name: str) -> Any:
    """A property (or method) of the capture's single head, read through
    [`Capture.head`][Capture.head]."""

    def read(self: Capture) -> Any:
        return getattr(self.head, name)

    member = getattr(HeadView, name)
    doc = inspect.getdoc(member.fget if isinstance(member, property) else member)
    return property(read, doc=f"The single head's ``{name}``: {doc}")


class Capture:
    """A set of forward hooks and the distributions they captured, one [`HeadView`][HeadView] per
    head in [`heads`][heads].

    Use it as a context manager, a decorator, or by hand with [`start`][start] / [`stop`][stop].
    Reads such as ``probs``, ``get`` or ``to_pandas`` are shortcuts to the single head and say
    so clearly when there are several; ``len(cap)``, ``capacity`` and ``evicted`` cover all
    heads.

    Examples:
        >>> import torch
        >>> from probhook import capture_probs
        >>> model = torch.nn.Linear(4, 3)
        >>> cap = capture_probs(model, temperature=2.0)
        >>> cap.start()
        >>> _ = model(torch.randn(5, 4))
        >>> cap.stop()
        >>> len(cap), cap.labels
        (5, ('0', '1', '2'))
        >>> bool(abs(cap.probs.sum(axis=1) - 1).max() < 1e-6)
        True
    """

    def __init__(self, target: Any = None, **options: Any) -> None:
        self.options = CaptureOptions.from_kwargs(options)  # every option checked here
        self.target = target
        self.heads: dict[str, HeadView] = {}
        self._meta: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
            "probhook_meta", default=None
        )
        self._recorder = Recorder(self.options, self._meta)
        self._stack: contextlib.ExitStack | None = None
        self._appended_at_start: dict[str, int] = {}
        self._adapter: Adapter | None = None
        self._specs: dict[str, HeadSpec] = {}  # the spec each head was hooked with

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the hooks are registered now."""
        return self._stack is not None

    @property
    def sink(self) -> Any:
        """The sink every row is written to (opened, its path locked, when the capture
        starts), or None."""
        return self._recorder.sink

    def start(self, target: Any = None) -> None:
        """Register the hooks (all or none); ``target`` overrides the one given at creation."""
        if self._stack is not None:
            raise RuntimeError(
                "this capture is already active; stop() it first, or create a second "
                "capture_probs(...) to capture the same model twice"
            )
        target = self.target if target is None else target
        if target is None:
            raise TypeError(
                "this capture has no target: pass the model, pipeline or list to capture_probs() "
                "or to start()"
            )
        if isinstance(target, str):
            raise TypeError(
                f"capture_probs(target={target!r}) names a parameter: use it as a decorator, or "
                "pass a model to start()"
            )
        adapter = adapter_for(target)
        specs = adapter.heads(self.options.heads)
        known = set(self.heads)
        opened = self._recorder.begin(adapter.columns, [s.name for s in specs])
        try:
            with contextlib.ExitStack() as stack:
                self._adapter = adapter
                adapter.install(self, stack)
                for spec in specs:
                    self._hook(spec, stack)
                self._stack = stack.pop_all()
        except BaseException:
            self._adapter = None
            for name in set(self.heads) - known:  # no empty head left by a failed start
                del self.heads[name]
            self._recorder.undo_begin(opened)  # no flush thread, no file left open
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
            self._recorder.end()  # rows of every finished forward reach the sink
        if warn:
            # an adapter may know why a head saw nothing (pages served but skipped, say)
            explain = getattr(self._adapter, "explain_empty", None)
            for name, before in self._appended_at_start.items():
                if self.heads[name].appended == before:
                    warnings.warn(
                        explain(name)
                        if explain is not None
                        else f"no forward of {name} ran inside the capture; a lazy iterator "
                        "consumed after the block captures nothing",
                        RuntimeWarning,
                        stacklevel=3,
                    )

    def close(self) -> None:
        """Stop, and close the sink (the file is complete once this returns). After a failure
        (a full disk, say), calling it again writes what was left and closes."""
        self.stop(warn=False)
        self._recorder.close_sink()

    def flush(self) -> None:
        """Store every row captured so far and write it to the sink now (rows reach it within
        ``flush_rows`` / ``flush_seconds`` anyway); a sink that cannot write raises a
        [`SinkError`][probhook.sink.SinkError], with the rows kept for the next try."""
        self._recorder.writer.drain()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(warn=exc_type is None)
        self._recorder.close_sink()

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call runs inside this capture; ``fn.capture`` is the capture
        (see [`probhook.decorator.decorate`][probhook.decorator.decorate])."""
        from probhook.decorator import decorate

        return decorate(self, fn)

    # -- keys ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def key(self, key: Hashable, **meta: Any) -> Iterator[None]:
        """Rows captured inside the block carry ``key`` and one column per ``meta`` value.

        Keys are ``str``, ``int`` or tuples of them (they keep their type in files); so are
        column values, and a column keeps the kind of its first value (an ``int`` column takes
        ints only). Columns must be given from the first ``key(...)`` on, before the head's
        first row, and may not take a name of probhook's own (``confidence``, ``p_<label>``,
        ...). Every value is checked here, never first when its row is written.
        """
        for value in key if isinstance(key, list) else [key]:
            check_value("key", value)
        self._recorder.declare(meta, self.heads)
        token = self._meta.set({"key": key, **meta})
        try:
            yield
        finally:
            self._meta.reset(token)

    def keys_for(self, keys: Sequence[Hashable]) -> contextlib.AbstractContextManager[None]:
        """Rows of the next forward of each head carry one key each, in batch order; later
        forwards inside the block have no key."""
        return self.key(KeyList(keys))  # type: ignore[arg-type]

    @contextlib.contextmanager
    def tokens(self, encoding: Any) -> Iterator[None]:
        """Token heads map the next forwards' tokens to the words of ``encoding`` (a fast
        tokenizer's ``BatchEncoding``): one row per word of each sequence, keyed
        ``(sequence, word index)``. Without it, a token head keeps one row per attended token."""
        token = self.add_meta(token_words(encoding))  # a slow tokenizer's encoding fails here
        try:
            yield
        finally:
            self._meta.reset(token)

    def set_meta(self, meta: dict[str, Any] | None) -> MetaToken[dict[str, Any] | None]:
        """For integrations: make ``meta`` current in this thread/context; returns a reset token."""
        return self._meta.set(meta)

    def release(self, held: list[tuple[Callable[[Any], None], Any]]) -> None:
        """For integrations: hand the rows that waited in a ``HOLD`` list to the writer (their
        page is done, its outcome in their metadata)."""
        self._recorder.release(held)

    def add_meta(self, entries: Mapping[str, Any]) -> MetaToken[dict[str, Any] | None]:
        """For integrations: the current metadata plus ``entries``; returns a reset token."""
        return self._meta.set({**(self._meta.get() or {}), **entries})

    def reset_meta(self, token: MetaToken[dict[str, Any] | None]) -> None:
        """For integrations: undo [`set_meta`][set_meta]."""
        self._meta.reset(token)

    # -- hooks --------------------------------------------------------------------------------

    def hook(self, spec: HeadSpec) -> None:
        """Hook ``spec`` while the capture runs (integrations follow a module swapped in
        mid-run with it); the hook is removed when the capture stops."""
        if self._stack is None:
            raise RuntimeError("hook() needs an active capture")
        self._hook(spec, self._stack)

    def _hook(self, spec: HeadSpec, stack: contextlib.ExitStack) -> None:
        view = self.heads.get(spec.name)
        if view is None:
            view = self.heads[spec.name] = element_view.view_type(spec.columns)(
                spec.name,
                labels=self._labels_for(spec),
                columns={**self._recorder.columns, **spec.columns},
                key_of=self._key_of,
                kind=spec.kind,
                group=spec.group,
            )
        self._specs[spec.name] = spec
        if not spec.staged:  # a staged head's rows come through stage_rows
            self._recorder.hook(spec, view).register(stack)
        stack.enter_context(sharing_check(spec))

    def stage_rows(self, head: str, make_rows: Callable[[], Any]) -> None:
        """For integrations: rows of the staged head ``head``, made later by ``make_rows``
        (with the metadata current now)."""
        self._recorder.stage_rows(self._specs[head], self.heads[head], self._meta.get(), make_rows)

    def _labels_for(self, spec: HeadSpec) -> tuple[str, ...] | None:
        labels = self.options.labels
        if isinstance(labels, Mapping):
            labels = labels.get(spec.name)
        return tuple(map(str, labels)) if labels is not None else spec.labels

    def _key_of(self, key: Any) -> Any:
        return self._adapter.key_of(key) if self._adapter is not None else key

    # -- reads: all heads, or a single head's shortcuts --------------------------------------

    @property
    def head(self) -> HeadView:
        """The single head (an empty one before the first start), or a clear error naming the
        heads when there are several."""
        if len(self.heads) == 1:
            return next(iter(self.heads.values()))
        if not self.heads:
            return HeadView("capture")
        raise ValueError(
            f"this capture has {len(self.heads)} heads ({', '.join(self.heads)}); "
            "read one through cap.heads[name]"
        )

    def get(self, key: Any) -> Distribution | None:
        """The most recent distribution captured under ``key``, or None.

        With a token head beside sequence heads, the one head holding ``key`` answers: a
        page's key is in the sequence heads, a word's (its ``annotation_id``) in the token
        head. Otherwise several heads are read through ``cap.heads[name]``.
        """
        if len(self.heads) <= 1:
            return self.head.get(key)
        found = {n: d for n, v in self.heads.items() if (d := v.get(key)) is not None}
        if len(found) == 1:
            return next(iter(found.values()))
        if not found and any(v.kind != "page" for v in self.heads.values()):
            return None
        return self.head.get(key)  # the error naming the heads

    def words(self, page: Any, head: str | None = None) -> list[Distribution]:
        """The word distributions of ``page`` (a page or its ``image_id``) in reading order,
        from the token head (name it with ``head=`` when there are several)."""
        return element_view.words_of(self.heads, page, head)

    def elements(self, page: Any, head: str | None = None, *, discarded: bool = False
                 ) -> list[Distribution]:  # fmt: skip
        """The elements of ``page`` (see [`probhook.element_view.elements_of`][])."""
        return element_view.elements_of(self.heads, page, head, discarded=discarded)

    def __len__(self) -> int:
        """Rows kept, over all heads."""
        return sum(len(view) for view in self.heads.values())

    @property
    def capacity(self) -> int:
        """Rows each head keeps (the ``capacity`` option)."""
        return self.options.capacity

    @property
    def evicted(self) -> int:
        """Rows dropped so far to make room, over all heads."""
        return sum(view.evicted for view in self.heads.values())

    @property
    def nbytes(self) -> int:
        """Bytes the heads' buffers hold."""
        return sum(view.nbytes for view in self.heads.values())

    buffer = _one_head("buffer")
    labels = _one_head("labels")
    probs = _one_head("probs")
    logits = _one_head("logits")
    keys = _one_head("keys")
    column = _one_head("column")
    latest = _one_head("latest")
    distributions = _one_head("distributions")
    by_document = _one_head("by_document")
    confidence = _one_head("confidence")
    margin = _one_head("margin")
    entropy = _one_head("entropy")
    top_k = _one_head("top_k")
    flag = _one_head("flag")
    flagged_keys = _one_head("flagged_keys")
    calibration = _one_head("calibration")
    estimate_accuracy = _one_head("estimate_accuracy")
    review_threshold = _one_head("review_threshold")
    target_indices = _one_head("target_indices")
    to_arrow = _one_head("to_arrow")
    to_pandas = _one_head("to_pandas")
    to_parquet = _one_head("to_parquet")
    plot = _one_head("plot")

    def _repr_html_(self) -> str:
        from probhook.notebook import heads_html

        return heads_html(self.heads.values() or [self.head])

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        heads = ", ".join(f"{n}: {len(v)} rows" for n, v in self.heads.items()) or "no heads yet"
        return f"<Capture {state}, {heads}, capacity {self.capacity}/head>"


def capture_probs(target: Any = None, **options: Any) -> Capture:
    """Capture the full probability distribution of every forward of ``target``'s classifier heads.

    ``target`` is a ``torch.nn.Module`` (a Hugging Face ``*ForSequenceClassification`` or any
    module returning ``(batch, classes)`` logits; a ``*ForTokenClassification``, whose rows are
    words: see [`Capture.tokens`][Capture.tokens]), a list of modules, an object of a framework
    that [`probhook.integrations`][probhook.integrations] knows (a document-analysis pipeline,
    component or wrapper), or, for a decorator, the name of the decorated function's parameter that
    holds the model (``"self.model"`` on a method).

    Examples:
        >>> import torch
        >>> from probhook import capture_probs
        >>> model = torch.nn.Linear(4, 2)
        >>> @capture_probs(target="net", labels=["no", "yes"])
        ... def predict(net, x):
        ...     return net(x)
        >>> _ = predict(model, torch.randn(3, 4))
        >>> len(predict.capture), predict.capture.get(None) is not None
        (3, True)

    The options are keyword-only, the same for [`Capture`][Capture], and checked here:
    ``capacity``, ``heads``, ``activation``, ``temperature``, ``labels``, ``dtype``,
    ``on_overflow``, ``sink``, ``keep_logits``, ``flush_rows``, ``flush_seconds``, ``output``,
    ``word_rule`` (see [`CaptureOptions`][probhook.options.CaptureOptions]).
    """
    return Capture(target, **options)
