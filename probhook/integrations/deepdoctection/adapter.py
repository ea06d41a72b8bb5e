"""deepdoctection: capture every LM classifier of a pipeline: a sequence classifier's head has
one row per page, a token classifier's one row per word ([`.tokens`][.tokens]).

``capture_probs`` accepts a ``DoctectionPipe`` (also one from ``dd.get_dd_analyzer``), an
``LMSequenceClassifierService``, an ``LMTokenClassifierService`` (one row per word), a
``MultiThreadPipelineComponent`` of either (its clones are one head: each clone's model is
hooked, each clone's ``serve`` attributes its pages, from whichever thread serves them), one of
their ``HF*`` wrappers, or a list of these:

    with capture_probs(analyzer) as cap:
        pages = list(analyzer.analyze(path="scans/"))
    cap.get(pages[0]).top_k(3)

Each component's ``serve`` is wrapped *on the instance* for the duration of the capture, so
that the forward hook knows which page is being served; classes are never touched and the
instance attribute is deleted again on exit. Column ``i`` of a head is the wrapper's category
``i + 1`` (deepdoctection's ids are 1-based; ``config.id2label`` is not used by it).

``page_number`` is stored 1-based (the first page of a document is 1) on every supported
version: deepdoctection 0.46 numbers pages from 0 and 1.x from 1, so 0.46's numbers are shifted.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from probhook.block import ColumnKind
from probhook.elements import ELEMENT_COLUMNS, n_real
from probhook.heads import HeadSpec, matches
from probhook.hooks import HOLD
from probhook.integrations import meta_during, wrap_on_instance
from probhook.integrations.deepdoctection import detectors, tokens
from probhook.options import Selector

if TYPE_CHECKING:
    from probhook.integrations import CaptureHost

PAGE_COLUMNS: Mapping[str, ColumnKind] = {
    "image_id": "str",
    "document_id": "str",
    "file_name": "str",
    "location": "str",
    "page_number": "int",
    "page_error": "str",
}


def page_offset(version: str) -> int:
    """What to add to deepdoctection's ``page_number`` for a 1-based number: 1 before 1.0."""
    return 1 if int(version.split(".")[0]) < 1 else 0


def page_meta(dp: Any, offset: int = 0) -> dict[str, Any]:
    """The attribution of one page: ``key`` is its ``image_id``; ``page_number`` is 1-based
    (``offset``: see [`page_offset`][page_offset]); ``page_error`` is set when the serving
    component fails after its model ran (the page has no result of it)."""
    number = dp.page_number
    return {
        "key": dp.image_id,
        "image_id": dp.image_id,
        "document_id": dp.document_id or None,
        "file_name": dp.file_name or None,
        "location": dp.location or None,
        "page_number": None if number is None else number + offset,
        "page_error": None,
    }


def category_labels(wrapper: Any) -> tuple[str, ...]:
    """Softmax column order: category ``i + 1`` names column ``i``, as plain strings."""
    categories = wrapper.categories.get_categories(as_dict=True)
    return tuple(str(getattr(categories[i], "value", categories[i])) for i in sorted(categories))


class _Component:
    """A serving component and how to reach its current torch module; ``serves``: whether its
    ``serve`` attributes pages (a bare wrapper does not); ``group``: the clones of one
    ``MultiThreadPipelineComponent`` share it and are one head."""

    def __init__(
        self,
        name: str,
        component: Any,
        model_of: Any,
        labels: tuple[str, ...],
        *,
        serves: bool = True,
        group: int | None = None,
        token_wrapper: Any = None,
        detector: Any = None,
    ) -> None:
        self.name, self.component, self.model_of, self.labels = name, component, model_of, labels
        self.serves, self.group, self.token_wrapper = serves, group, token_wrapper
        self.detector = detector  # a detector's service (or the bare detector): element rows
        # the context a detector's service serves a page in (see detectors.install)
        self.context: Callable[[Any], contextlib.AbstractContextManager[None]] | None = None
        self._serving = (
            tokens.serving_meta(component) if token_wrapper is not None and serves else None
        )

    def spec(self, module: Any = None) -> HeadSpec:
        module = self.model_of() if module is None else module
        if self.detector is not None:
            return HeadSpec(self.name, module, labels=self.labels, columns=ELEMENT_COLUMNS,
                            staged=True)  # fmt: skip
        if self.token_wrapper is None:
            return HeadSpec(self.name, module, labels=self.labels)
        return HeadSpec(self.name, module, labels=self.labels, rows_of=tokens.rows_of,
                        columns=tokens.TOKEN_COLUMNS, kind="word", group="image_id")  # fmt: skip

    def meta(self, dp: Any, offset: int) -> dict[str, Any]:
        """The metadata of rows captured while this component serves ``dp``."""
        meta = page_meta(dp, offset)
        if self._serving is not None:
            meta.update(self._serving(dp))
        return meta


def _detector(component: Any, detector: Any) -> _Component:
    """A detector's head: its service (None for a bare detector) and the detector."""
    labels = detectors.detector_labels(detector)
    name = _short(detectors.architecture(detector), labels[: n_real(labels)])
    return _Component(name, component, lambda: detector.hf_detr_predictor, labels,
                      serves=component is not None, detector=detector)  # fmt: skip


def _token(name: str, component: Any, wrapper: Any, group: int | None = None) -> _Component:
    """A token classifier's head: its service (None for a bare wrapper) and its wrapper, whose
    ``predict`` tells which token belongs to which word."""
    tokens.check_mappable(wrapper, name)
    labels = category_labels(wrapper)
    return _Component(_short(name, labels), component, lambda: wrapper.model, labels,
                      serves=component is not None, group=group, token_wrapper=wrapper)  # fmt: skip


class DeepdoctectionAdapter:
    """Finds the classifier heads of deepdoctection objects (one, or a list) and attributes
    rows to pages."""

    columns = PAGE_COLUMNS

    def __init__(self, target: Any) -> None:
        import deepdoctection as dd

        self.dd = dd
        self.targets = list(target) if isinstance(target, (list, tuple)) else [target]
        self.offset = page_offset(dd.__version__)
        self.served: Counter[str] = Counter()  # pages served per head, while capturing
        self._lock = threading.Lock()
        self.unmapped: list[str] = []  # detectors of the targets probhook cannot map

    def _candidates(self, target: Any) -> list[_Component] | list[Any]:
        """The components of one target, or the wrapper itself as a finished component."""
        dd = self.dd
        services = (
            dd.LMSequenceClassifierService,
            dd.LMTokenClassifierService,
            dd.MultiThreadPipelineComponent,
            dd.ImageLayoutService,
            dd.SubImageLayoutService,
        )
        if isinstance(target, services):
            if detectors.is_detector_service(dd, target):
                detectors.check(dd, target, None)  # asked for: one it cannot map is refused
            return [target]
        if hasattr(target, "pipe_component_list"):
            return list(target.pipe_component_list)
        if tokens.is_token_wrapper(dd, target):
            return [_token(target.name, None, target)]
        if isinstance(target, dd.ObjectDetector):
            detectors.check(dd, target, None)
            return [_detector(None, target)]
        if hasattr(target, "categories") and hasattr(target, "model"):
            labels = category_labels(target)
            return [
                _Component(
                    _short(target.name, labels), target, lambda: target.model, labels, serves=False
                )
            ]
        raise TypeError(
            f"capture_probs does not know the deepdoctection object {type(target).__name__}; "
            "pass a DoctectionPipe, an LMSequenceClassifierService or LMTokenClassifierService, "
            "a MultiThreadPipelineComponent, one of their HF* wrappers, an ImageLayoutService "
            "or SubImageLayoutService, an HFDetrDerivedDetector or a list of these"
        )

    def _services(self, comp: Any, selector: Selector | None) -> list[_Component]:
        dd = self.dd
        if isinstance(comp, _Component):
            return [comp]
        if isinstance(comp, dd.MultiThreadPipelineComponent):
            # each clone has its own model (clone() reloads weights): hook them all as one head
            first = comp.pipe_components[0]
            name = _short(first.name, category_labels(first.language_model))
            group = id(comp)
            return [
                _token(c.name, c, c.language_model, group)
                if isinstance(c, dd.LMTokenClassifierService)
                else _Component(name, c, lambda c=c: c.language_model.model,
                                category_labels(c.language_model), group=group)
                for c in comp.pipe_components
                if isinstance(c, (dd.LMSequenceClassifierService, dd.LMTokenClassifierService))
            ]  # fmt: skip
        if isinstance(comp, dd.LMSequenceClassifierService):
            lm = comp.language_model
            return [
                _Component(
                    _short(comp.name, category_labels(lm)), comp,
                    lambda c=comp: c.language_model.model, category_labels(lm),
                )
            ]  # fmt: skip
        if isinstance(comp, dd.LMTokenClassifierService):
            return [_token(comp.name, comp, comp.language_model)]
        if detectors.is_detector_service(dd, comp):
            mappable = detectors.check(dd, comp, self.unmapped)
            return [_detector(comp, comp.predictor)] if mappable else []
        if isinstance(comp, dd.LanguageDetectionService) and selector is not None:
            # its XLM-R model detects languages, not document types: only when asked for
            det = comp.predictor
            labels = category_labels(det) if hasattr(det, "categories") else None
            labels = labels or ()
            return [_Component(_short(comp.name, labels), comp, lambda d=det: d.model, labels)]
        return []

    def _components(self, selector: Selector | None) -> list[_Component]:
        self.unmapped.clear()
        candidates = [c for target in self.targets for c in self._candidates(target)]
        found = [svc for comp in candidates for svc in self._services(comp, selector)]
        if selector is not None:
            selectors = selector if isinstance(selector, (list, tuple)) else [selector]
            found = [c for c in found if any(matches(s, c.name, c.model_of()) for s in selectors)]
        if not found:
            names = [getattr(c, "name", type(c).__name__) for c in candidates]
            kinds = ", ".join(type(t).__name__ for t in self.targets)
            unmapped = f"; detectors probhook cannot map: {'; '.join(self.unmapped)}"
            raise ValueError(
                f"found no LM sequence classifier, token classifier or DETR-family detector in "
                f"{kinds} (components: {names}{'' if selector is None else f', heads={selector!r}'}"
                f"){unmapped if self.unmapped else ''}. Add an LMSequenceClassifierService, "
                "LMTokenClassifierService or a layout service with an HFDetrDerivedDetector, or "
                "name a component with heads="
            )
        if self.unmapped:
            warnings.warn(
                "these detectors give no rows (probhook cannot map them): "
                + "; ".join(self.unmapped), RuntimeWarning, stacklevel=5,
            )  # fmt: skip
        return _dedupe(found)

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        self._found = self._components(selector)
        unique: dict[int, _Component] = {}  # a module shared by components is hooked once
        for comp in self._found:
            unique.setdefault(id(comp.model_of()), comp)
        return [c.spec() for c in unique.values()]

    def install(self, host: CaptureHost, stack: contextlib.ExitStack) -> None:
        self.served.clear()
        wrapped: set[int] = set()
        current = detectors.Current()  # this capture's detector wrappers share it
        for comp in self._found:
            if comp.detector is not None:
                service = comp.component if comp.serves else None
                comp.context = detectors.install(comp.detector, service, comp.name, host, stack,
                                                 wrap_on_instance, wrapped, current)  # fmt: skip
                if comp.serves:
                    _wrap_serve(comp, host, stack, self)
                continue
            wrapper = comp.token_wrapper
            if wrapper is not None and id(wrapper) not in wrapped:  # shared: wrapped once
                wrapped.add(id(wrapper))
                tokens.wrap_predict(wrapper, host, stack)
            if comp.serves:
                _wrap_serve(comp, host, stack, self)
            elif wrapper is None:  # a sequence wrapper alone: the page comes with its input
                _wrap_predict(comp.component, host, stack)

    def count_served(self, name: str) -> None:
        """One more page served to head ``name`` (from any thread)."""
        with self._lock:
            self.served[name] += 1

    def explain_empty(self, name: str) -> str:
        """Why head ``name`` captured no row: no page was served, or pages were served but
        deepdoctection ran no forward for them."""
        n = self.served[name]
        if n == 0:
            return (
                f"no page was served to {name} inside the capture (a lazy dataflow consumed "
                "after the block captures nothing: iterate it inside the block)"
            )
        if any(c.name == name and c.detector is not None for c in self._found):
            return f"{n} page(s) served to {name}, but its detector stored no element on them"
        return (
            f"{n} page{'s were' if n != 1 else ' was'} served to {name} but none reached the "
            "model, so there are 0 rows: deepdoctection skips pages without words (layout "
            "models), pages its filter_func excludes, and pages use_other_as_default_category "
            "labels 'other', on purpose"
        )

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


def _short(name: str, labels: tuple[str, ...]) -> str:
    """A readable head name: the architecture and the categories (``LayoutLM letter/form/memo``),
    not deepdoctection's name, which ends in the weights' folders (often temporary ones)."""
    for prefix in ("lm_sequence_class_", "Transformers_"):
        name = name.removeprefix(prefix)
    arch = name.split("_", 1)[0]
    shown = "/".join(labels[:4]) + (f"/+{len(labels) - 4}" if len(labels) > 4 else "")
    return f"{arch} {shown}" if shown else arch


def _dedupe(found: list[_Component]) -> list[_Component]:
    """Components sharing one module, and the clones of one multi-thread component, are one
    head; other heads that share a name get a suffix."""
    head_of: dict[tuple[str, int], str] = {}
    names: set[str] = set()
    for comp in found:
        keys = [("module", id(comp.model_of()))]
        if comp.group is not None:
            keys.append(("group", comp.group))
        known = next((head_of[k] for k in keys if k in head_of), None)
        if known is None:
            base, i = comp.name, 2
            while comp.name in names:
                comp.name, i = f"{base}#{i}", i + 1
            names.add(comp.name)
        else:
            comp.name = known
        head_of.update(dict.fromkeys(keys, comp.name))
    return found


def _wrap_serve(
    comp: _Component, host: CaptureHost, stack: contextlib.ExitStack, adapter: Any
) -> None:
    offset = adapter.offset
    hooked = weakref.WeakSet([comp.model_of()])  # ids could be reused by a new module

    def around(original: Any) -> Any:
        def serve(dp: Any) -> Any:
            module = comp.model_of()
            if module not in hooked:  # language_model.model was swapped: follow it
                hooked.add(module)
                host.hook(comp.spec(module))
            adapter.count_served(comp.name)
            meta = comp.meta(dp, offset)
            held = meta[HOLD] = []  # the page's rows wait for its outcome
            token = host.set_meta(meta)
            try:
                if comp.context is None:
                    return original(dp)
                with comp.context(dp):  # a detector's service: its elements, made at the end
                    return original(dp)
            except BaseException as err:
                meta["page_error"] = f"{type(err).__name__}: {err}"
                raise
            finally:
                host.reset_meta(token)
                host.release(held)

        return serve

    wrap_on_instance(comp.component, "serve", around, stack)


def _wrap_predict(wrapper: Any, host: CaptureHost, stack: contextlib.ExitStack) -> None:
    """Attribute the rows of a wrapper captured on its own: deepdoctection passes the served
    page's ``image_ids`` to ``predict``, so rows get the page's id as key (the other page
    columns need the service: capture it or its pipe for them)."""

    def meta_of(encodings: Mapping[str, Any]) -> dict[str, Any]:
        ids = encodings.get("image_ids") or [None]
        return {"key": ids[0], "image_id": ids[0]}

    meta_during(wrapper, "predict", host, stack, meta_of)
