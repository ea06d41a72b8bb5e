"""deepdoctection: capture every LM classifier of a pipeline: a sequence classifier's head has
one row per page, a token classifier's one row per word (:mod:`.tokens`).

``capture_probs`` accepts a ``DoctectionPipe`` (also one from ``dd.get_dd_analyzer``), an
``LMSequenceClassifierService`` or ``LMTokenClassifierService``, or one of their ``HF*``
wrappers::

    with capture_probs(analyzer) as cap:
        pages = list(analyzer.analyze(path="scans/"))
    cap.get(pages[0]).top_k(3)

Each component's ``serve`` is wrapped *on the instance* for the duration of the capture, so
that the forward hook knows which page is being served; classes are never touched and the
instance attribute is deleted again on exit. Column ``i`` of a head is the wrapper's category
``i + 1`` (deepdoctection's ids are 1-based; ``config.id2label`` is not used by it).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from probhook.block import ColumnKind
from probhook.heads import HeadSpec, matches
from probhook.integrations.deepdoctection import tokens
from probhook.options import Selector

if TYPE_CHECKING:
    from probhook.integrations import CaptureHost

PAGE_COLUMNS: Mapping[str, ColumnKind] = {
    "image_id": "str",
    "document_id": "str",
    "file_name": "str",
    "location": "str",
    "page_number": "int",
}


def page_meta(dp: Any) -> dict[str, Any]:
    """The attribution of one page: ``key`` is its ``image_id``."""
    return {
        "key": dp.image_id,
        "image_id": dp.image_id,
        "document_id": dp.document_id or None,
        "file_name": dp.file_name or None,
        "location": dp.location or None,
        "page_number": dp.page_number,
    }


def category_labels(wrapper: Any) -> tuple[str, ...]:
    """Softmax column order: category ``i + 1`` names column ``i``, as plain strings."""
    categories = wrapper.categories.get_categories(as_dict=True)
    return tuple(str(getattr(categories[i], "value", categories[i])) for i in sorted(categories))


class _Component:
    """A serving component and how to reach its current torch module; a token classifier's
    also has its wrapper (whose ``predict`` is wrapped) and serves its pages in :func:`serving`."""

    def __init__(self, name: str, component: Any, model_of: Any, labels: tuple[str, ...],
                 token_wrapper: Any = None) -> None:  # fmt: skip
        self.name, self.component, self.model_of, self.labels = name, component, model_of, labels
        self.token_wrapper = token_wrapper

    def spec(self, module: Any = None) -> HeadSpec:
        module = self.model_of() if module is None else module
        if self.token_wrapper is None:
            return HeadSpec(self.name, module, labels=self.labels)
        return HeadSpec(self.name, module, labels=self.labels, rows_of=tokens.rows_of,
                        columns=tokens.TOKEN_COLUMNS)  # fmt: skip

    def serving(self, dp: Any) -> contextlib.AbstractContextManager[None]:
        if self.token_wrapper is None:
            return contextlib.nullcontext()
        return tokens.serving(self.component, dp)


def _token(dd: Any, name: str, component: Any, wrapper: Any) -> _Component:
    tokens.check_mappable(wrapper, name)
    return _Component(
        _short(name), component, lambda: wrapper.model, category_labels(wrapper), wrapper
    )


class DeepdoctectionAdapter:
    """Finds the classifier heads of deepdoctection objects and attributes rows to pages."""

    columns = PAGE_COLUMNS

    def __init__(self, target: Any) -> None:
        import deepdoctection as dd

        self.dd, self.target = dd, target
        self.wrapper_only = False

    def _components(self, selector: Selector | None) -> list[_Component]:
        dd, target = self.dd, self.target
        if isinstance(target, (dd.LMSequenceClassifierService, dd.LMTokenClassifierService)):
            candidates = [target]
        elif hasattr(target, "pipe_component_list"):
            candidates = list(target.pipe_component_list)
        elif tokens.is_token_wrapper(dd, target):
            self.wrapper_only = True
            return [_token(dd, target.name, None, target)]
        elif hasattr(target, "categories") and hasattr(target, "model"):
            self.wrapper_only = True
            return [
                _Component(
                    _short(target.name), target, lambda: target.model, category_labels(target)
                )
            ]
        else:
            raise TypeError(
                f"capture_probs does not know the deepdoctection object {type(target).__name__}; "
                "pass a DoctectionPipe, an LMSequenceClassifierService, an "
                "LMTokenClassifierService or one of their HF* wrappers"
            )
        found: list[_Component] = []
        for comp in candidates:
            if isinstance(comp, dd.MultiThreadPipelineComponent):
                raise NotImplementedError(
                    f"{comp.name} runs clones of its component in threads; each clone has its own "
                    "model, which a capture started beforehand cannot see. Capture a pipe without "
                    "MultiThreadPipelineComponent."
                )
            if isinstance(comp, dd.LMSequenceClassifierService):
                lm = comp.language_model
                found.append(
                    _Component(
                        _short(comp.name),
                        comp,
                        lambda c=comp: c.language_model.model,
                        category_labels(lm),
                    )
                )
            elif isinstance(comp, dd.LMTokenClassifierService):
                found.append(_token(dd, comp.name, comp, comp.language_model))
            elif isinstance(comp, dd.LanguageDetectionService) and selector is not None:
                # its XLM-R model detects languages, not document types: only when asked for
                det = comp.predictor
                labels = category_labels(det) if hasattr(det, "categories") else None
                found.append(
                    _Component(_short(comp.name), comp, lambda d=det: d.model, labels or ())
                )
        if selector is not None:
            selectors = selector if isinstance(selector, (list, tuple)) else [selector]
            found = [c for c in found if any(matches(s, c.name, c.model_of()) for s in selectors)]
        if not found:
            names = [getattr(c, "name", type(c).__name__) for c in candidates]
            raise ValueError(
                f"found no LM sequence classifier or token classifier in "
                f"{type(target).__name__} (components: "
                f"{names}{'' if selector is None else f', heads={selector!r}'}). Add an "
                "LMSequenceClassifierService or LMTokenClassifierService, or name a component "
                "with heads="
            )
        return _dedupe(found)

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        self._found = self._components(selector)
        unique = {c.name: c for c in reversed(self._found)}  # shared modules: one head
        return [unique[name].spec() for name in dict.fromkeys(c.name for c in self._found)]

    def install(self, host: CaptureHost, stack: contextlib.ExitStack) -> None:
        wrapped: set[int] = set()
        for comp in self._found:
            wrapper = comp.token_wrapper
            if wrapper is not None and id(wrapper) not in wrapped:  # shared: wrapped once
                wrapped.add(id(wrapper))
                tokens.wrap_predict(wrapper, stack)
            if not self.wrapper_only:
                _wrap_serve(comp, host, stack)

    def key_of(self, key: Any) -> Any:
        # a Page or Image stands for its image_id, a word annotation for its annotation_id
        if key is None or isinstance(key, (str, int, tuple)):
            return key
        for name in ("image_id", "annotation_id"):
            # asked of the class: deepdoctection's views raise a BaseException for attributes
            # they lack, which getattr's default does not catch
            if isinstance(getattr(type(key), name, None), property):
                return getattr(key, name)
        return key


def _short(name: str) -> str:
    for prefix in ("lm_sequence_class_", "lm_token_class_", "Transformers_"):
        name = name.removeprefix(prefix)
    return name


def _dedupe(found: list[_Component]) -> list[_Component]:
    """Components sharing one module are one head; distinct modules with one name get a suffix."""
    by_module: dict[int, _Component] = {}
    names: set[str] = set()
    out: list[_Component] = []
    for comp in found:
        module_id = id(comp.model_of())
        if module_id in by_module:
            comp.name = by_module[module_id].name
            out.append(comp)
            continue
        base, i = comp.name, 2
        while comp.name in names:
            comp.name, i = f"{base}#{i}", i + 1
        names.add(comp.name)
        by_module[module_id] = comp
        out.append(comp)
    return out


def _wrap_serve(comp: _Component, host: CaptureHost, stack: contextlib.ExitStack) -> None:
    component = comp.component
    had_own = "serve" in vars(component)
    original = component.serve
    hooked = weakref.WeakSet([comp.model_of()])  # ids could be reused by a new module

    def serve(dp: Any) -> Any:
        module = comp.model_of()
        if module not in hooked:  # language_model.model was swapped: follow it
            hooked.add(module)
            host.hook(comp.spec(module))
        token = host.set_meta(page_meta(dp))
        try:
            with comp.serving(dp):
                return original(dp)
        finally:
            host.reset_meta(token)

    def restore() -> None:
        if had_own:
            component.serve = original
        else:
            del component.serve

    component.serve = serve
    stack.callback(restore)
