"""Framework integrations: how ``capture_probs`` understands objects that are not plain modules.

The capture never names a framework. It asks [`adapter_for`][adapter_for] for an adapter, and the
registry below picks one by the module the target's class comes from; the adapter's module is
imported only then, so probhook works without any framework installed. A new framework is one
module under ``probhook/integrations/`` with an adapter class, and one [`register`][register] line.

An adapter provides (see [`Adapter`][Adapter]):

* ``columns``: the extra metadata columns its rows carry (name -> ``"int"`` or ``"str"``);
* ``heads(selector)``: the heads to hook, as [`HeadSpec`][probhook.heads.HeadSpec] (called when the
  capture starts; a bad target or selector raises there, before any hook exists);
* ``install(host, stack)``: instance-level patches for the capture's duration (wrapping a
  component's ``serve`` to attribute rows, say), each undone by a callback on ``stack``;
* ``key_of(key)``: the stored key for what a user passes to ``cap.get`` (a page -> its id);
* optionally ``explain_empty(head)``: why a head captured no row inside a block (the capture's
  end-of-block warning says it instead of its generic "lazy iterator" guess).

It talks to the capture only through [`CaptureHost`][CaptureHost]: register a head's hook (to follow
a module swapped in mid-run), set, extend or reset the metadata of the rows captured in this
context (one ``ContextVar``: everything a forward's rows need of its context is in it), hand on
rows that waited for their page's outcome, hand over the rows of a staged head (one without a
forward hook), and read the capture's options.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from probhook.block import ColumnKind
from probhook.heads import HeadSpec, find_heads
from probhook.options import CaptureOptions, Selector

if TYPE_CHECKING:
    from probhook.heads import MappedRows

MetaToken = contextvars.Token  # what set_meta returns and reset_meta takes


class CaptureHost(Protocol):
    """What an adapter may ask of the capture it serves."""

    options: CaptureOptions

    def hook(self, spec: HeadSpec) -> None:
        """Hook ``spec`` now (removed when the capture stops)."""

    def set_meta(self, meta: dict[str, Any] | None) -> MetaToken[dict[str, Any] | None]:
        """Make ``meta`` (``key`` and column values) current for rows captured in this context."""

    def add_meta(self, entries: Mapping[str, Any]) -> MetaToken[dict[str, Any] | None]:
        """Make the current metadata plus ``entries`` current (a forward's own details)."""

    def reset_meta(self, token: MetaToken[dict[str, Any] | None]) -> None:
        """Undo [`set_meta`][set_meta]."""

    def release(self, held: list[Any]) -> None:
        """Hand on the rows that waited in the metadata's ``probhook.hooks.HOLD`` list."""

    def stage_rows(self, head: str, make_rows: Callable[[], MappedRows]) -> None:
        """Rows of the staged head ``head`` (``HeadSpec.staged``), made by ``make_rows`` when
        the capture stores them, with the metadata current now."""


class Adapter(Protocol):
    """What an integration provides so that ``capture_probs`` understands its objects."""

    columns: Mapping[str, ColumnKind]

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        """The heads to hook, resolved when the capture starts."""

    def install(self, host: CaptureHost, stack: contextlib.ExitStack) -> None:
        """Instance-level patches for the capture's duration, undone by ``stack``."""

    def key_of(self, key: Any) -> Any:
        """The stored key for what a user passes to ``cap.get``."""


class ModuleAdapter:
    """Plain modules and Hugging Face models: heads by discovery, keys as given; a
    ``*ForTokenClassification`` found among them maps its rows to words
    ([`hf_models`][probhook.integrations.hf_models])."""

    columns: Mapping[str, ColumnKind] = {}

    def __init__(self, target: Any) -> None:
        self.target = target

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        """Heads found by [`probhook.heads.find_heads`][probhook.heads.find_heads]."""
        specs = find_heads(self.target, selector)
        for spec in specs:
            if spec.kind == "word" and spec.rows_of is None:
                from probhook.integrations import hf_models

                spec.rows_of, spec.group = hf_models.rows_of, hf_models.GROUP
                spec.columns = dict(hf_models.COLUMNS)
        return specs

    def install(self, host: CaptureHost, stack: contextlib.ExitStack) -> None:
        """Nothing to patch: forward hooks alone see every row."""

    def key_of(self, key: Any) -> Any:
        """Keys are stored as given."""
        return key


def wrap_on_instance(obj: Any, name: str, around: Any, stack: contextlib.ExitStack) -> None:
    """Replace method ``name`` on the instance ``obj`` (never its class) by
    ``around(original)`` for the capture's duration; ``stack`` restores it exactly."""
    had_own = name in vars(obj)
    original = getattr(obj, name)

    def restore() -> None:
        if had_own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)

    setattr(obj, name, around(original))
    stack.callback(restore)


def meta_during(
    obj: Any,
    name: str,
    host: CaptureHost,
    stack: contextlib.ExitStack,
    meta_of: Callable[[Mapping[str, Any]], dict[str, Any]],
    *,
    add: bool = False,
) -> None:
    """Wrap the keyword-only method ``name`` of ``obj`` on the instance (undone by ``stack``):
    while it runs, the capture's metadata is ``meta_of(its kwargs)`` (``add``: the current
    metadata plus it)."""

    def around(original: Any) -> Any:
        def method(**kwargs: Any) -> Any:
            meta = meta_of(kwargs)
            token = host.add_meta(meta) if add else host.set_meta(meta)
            try:
                return original(**kwargs)
            finally:
                host.reset_meta(token)

        return method

    wrap_on_instance(obj, name, around, stack)


def token_words(encoding: Any) -> dict[str, Any]:
    """What ``cap.tokens(encoding)`` makes current for word heads: the words of a Hugging Face
    fast tokenizer's ``BatchEncoding``."""
    from probhook.integrations import hf_models

    return hf_models.token_words(encoding)


_REGISTRY: list[tuple[tuple[str, ...], str]] = []


def register(module_prefixes: tuple[str, ...], adapter: str) -> None:
    """Use ``adapter`` (``"package.module:Class"``, imported when first needed) for targets
    whose class is defined in a module starting with one of ``module_prefixes``."""
    _REGISTRY.append((tuple(p.rstrip(".") + "." for p in module_prefixes), adapter))


def adapter_for(target: Any) -> Adapter:
    """The registered adapter for ``target`` (the first item's, for a list), else a
    [`ModuleAdapter`][ModuleAdapter]. A class defined elsewhere that derives from a framework's
    class (a user's own detector, say) is that framework's."""
    probe = target[0] if isinstance(target, (list, tuple)) and target else target
    for cls in type(probe).__mro__:
        module = cls.__module__ + "."
        for prefixes, path in _REGISTRY:
            if module.startswith(prefixes):
                module_name, class_name = path.split(":")
                adapter: Adapter = getattr(importlib.import_module(module_name), class_name)(target)
                return adapter
    return ModuleAdapter(target)


register(
    ("deepdoctection", "dd_core"), "probhook.integrations.deepdoctection:DeepdoctectionAdapter"
)
# pipelines only: transformers *models* (transformers.models.*) stay plain modules
register(("transformers.pipelines",), "probhook.integrations.transformers:PipelineAdapter")
