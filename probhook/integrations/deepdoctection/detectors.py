"""deepdoctection DETR-family detectors: one row per element a detector's service stores, keyed by
the element's ``annotation_id``.

``ImageLayoutService.serve(page)`` (layout) calls its ``HFDetrDerivedDetector.predict`` once on the
page image; ``SubImageLayoutService.serve(page)`` (table structure) once per table, on the table's
image. ``predict`` runs the model, moves ``logits`` and ``pred_boxes`` to the CPU, post-processes
them with its image processor (a threshold; Deformable DETR's top-k pairs), runs non-maximum
suppression per class and drops classes it does not know or filters; the service then stores each
detection with ``dp_manager.set_image_annotation``, which returns the new annotation's id (or
None when deepdoctection refuses the box, e.g. one reaching outside the image).

For the duration of a capture, four methods are wrapped *on instances* (classes are never
touched): the detector's ``predict`` (which detections it returned) and its image processor's
``post_process_object_detection`` (views of the CPU logits and boxes deepdoctection made, the
threshold, what passed it: no other copy from the device), the service's
``dp_manager.set_image_annotation`` (which detection became which annotation) and, for table
structure, ``prepare_np_image`` (which table is being detected on). When the service's ``serve``
returns, the elements' boxes are read from the page and the page's rows staged in the capture
(``CaptureHost.stage_rows``); they are made later, with the capture's other staged rows: each
stored detection matched to its query ([`probhook.detections`][probhook.detections]).
Each capture's wrappers share their own state (two captures of one pipe nest, each with its
rows).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from probhook.detections import NO_OBJECT
from probhook.heads import MappedRows
from probhook.integrations.deepdoctection.element_rows import (
    Forward,
    bare_rows,
    page_boxes,
    page_rows,
)

if TYPE_CHECKING:
    from probhook.integrations import CaptureHost

MODELS = {
    "TableTransformerForObjectDetection": "softmax",
    "DetrForObjectDetection": "softmax",
    "DeformableDetrForObjectDetection": "sigmoid",
}
"""The models whose post-processing probhook mirrors, and how each scores its queries."""


def is_detector_service(dd: Any, obj: Any) -> bool:
    """Whether ``obj`` is a service that stores a detector's elements."""
    return isinstance(obj, (dd.ImageLayoutService, dd.SubImageLayoutService))


def unmappable(dd: Any, detector: Any) -> str | None:
    """Why probhook cannot map ``detector``'s detections to class distributions (None: it can)."""
    name = type(detector).__name__
    if not isinstance(detector, dd.HFDetrDerivedDetector):
        return (
            f"{name} is not a DETR-family HFDetrDerivedDetector: its detections (detectron2, "
            "TensorFlow, OCR or PDF text detectors) carry no class distribution probhook can "
            "map to them"
        )
    if type(detector).predict is not dd.HFDetrDerivedDetector.predict:
        return f"{name} overrides HFDetrDerivedDetector.predict: its post-processing is unknown"
    model = type(getattr(detector, "hf_detr_predictor", None)).__name__
    if model not in MODELS:
        return f"{name} runs a {model}, not one of {sorted(MODELS)}"
    return None


def check(dd: Any, obj: Any, unmapped: list[str] | None) -> bool:
    """Whether ``obj`` (a layout service or a detector) gives element rows; a detector probhook
    cannot map is refused with a ``ValueError`` when it was asked for (``unmapped`` None), else
    named in ``unmapped``."""
    why = unmappable(dd, getattr(obj, "predictor", obj))
    if why is None:
        return True
    where = getattr(obj, "name", type(obj).__name__)
    if unmapped is None:
        raise ValueError(f"{where}: {why}, so it gives no element rows")
    unmapped.append(f"{where} ({why})")
    return False


def kind_of(detector: Any) -> str:
    """``"softmax"`` or ``"sigmoid"``: how ``detector``'s model scores its queries."""
    return MODELS[type(detector.hf_detr_predictor).__name__]


def architecture(detector: Any) -> str:
    """A readable architecture name (``TableTransformer``, ``DeformableDetr``)."""
    return type(detector.hf_detr_predictor).__name__.removesuffix("ForObjectDetection")


def detector_labels(detector: Any) -> tuple[str, ...]:
    """Column names: the model's class ``i`` is deepdoctection's category ``i + 1`` (``class_i``
    where it has none), then ``no_object`` for a softmax detector."""
    from deepdoctection import get_type

    categories = {int(k): get_type(v) for k, v in dict(detector.categories.init_categories).items()}
    names: list[str] = []
    for i in range(int(detector.hf_detr_predictor.config.num_labels)):
        cat = categories.get(i + 1)
        name = str(getattr(cat, "value", cat)) if cat is not None else f"class_{i}"
        names.append(name if name not in names else f"{name}_{i}")
    return (*names, NO_OBJECT) if kind_of(detector) == "softmax" else tuple(names)


def dropped_columns(detector: Any) -> frozenset[int]:
    """Model columns whose detections deepdoctection drops: filtered categories, classes it has
    no category for, and ``default_type`` (``_map_category_names``)."""
    from deepdoctection.extern.base import DefaultType

    shifted = detector.categories.shift_category_ids(-1)
    n = int(detector.hf_detr_predictor.config.num_labels)
    return frozenset(c for c in range(n) if shifted.get(c, DefaultType.DEFAULT_TYPE)
                     == DefaultType.DEFAULT_TYPE)  # fmt: skip


@dataclass
class _Serving:
    """A service serving one page: its forwards, and which detection each result object is."""

    component: Any
    page: Any
    parent: Any = None  # the table whose image is prepared now (table structure)
    forwards: list[Forward] = field(default_factory=list)
    results: dict[int, tuple[Forward, int, Any]] = field(default_factory=dict)


class Current:
    """What one capture's wrappers share in a context: the page a service serves and the
    ``predict`` call running now. Each capture has its own (the wrappers of two captures of one
    pipe are nested, and each keeps its own rows), in one context variable for all."""

    _VAR: contextvars.ContextVar[Mapping[Any, Any]] = contextvars.ContextVar(
        "probhook_dd_detectors", default=MappingProxyType({})
    )

    def __init__(self) -> None:
        self.serving, self.call = (id(self), "serving"), (id(self), "call")

    def get(self, slot: Any) -> Any:
        """The value of ``slot`` in this context (None: not set)."""
        return self._VAR.get().get(slot)

    @contextlib.contextmanager
    def set(self, slot: Any, value: Any) -> Iterator[None]:
        """``slot`` holds ``value`` inside the block."""
        token = self._VAR.set({**self._VAR.get(), slot: value})
        try:
            yield
        finally:
            self._VAR.reset(token)


StageRows = Callable[[Callable[[], MappedRows]], None]


def wrap_detector(detector: Any, wrap: Any, stack: contextlib.ExitStack, current: Current, *,
                  keep_logits: bool, bare: StageRows | None = None) -> None:  # fmt: skip
    """Wrap ``predict`` and its image processor's post-processing on the instances; ``bare``
    stages the rows of a detector captured without its service (keyed by position)."""
    kind, processor = kind_of(detector), detector.feature_extractor

    def around_post(original: Any) -> Any:
        signature = inspect.signature(original)  # through the wraps of another capture's

        @functools.wraps(original)
        def post_process_object_detection(*args: Any, **kwargs: Any) -> Any:
            results = original(*args, **kwargs)
            forward = current.get(current.call)
            if forward is not None:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                forward.take(dict(bound.arguments), results[0])
            return results

        return post_process_object_detection

    def around_predict(original: Any) -> Any:
        @functools.wraps(original)
        def predict(np_img: Any) -> Any:
            serving = current.get(current.serving)
            forward = Forward(serving.parent if serving is not None else None)
            with current.set(current.call, forward):
                results = original(np_img)
            forward.keep_returned(results)
            if serving is not None and serving.component.predictor is detector:
                serving.forwards.append(forward)
                serving.results.update({id(r): (forward, i, r) for i, r in enumerate(results)})
            elif bare is not None and forward.logits is not None:
                forward.stored = list(range(len(results)))
                bare(functools.partial(bare_rows, forward, kind, keep_logits))
            return results

        return predict

    wrap(processor, "post_process_object_detection", around_post, stack)
    wrap(detector, "predict", around_predict, stack)


def service_serving(
    dd: Any, component: Any, wrap: Any, stack: contextlib.ExitStack, stage: StageRows,
    current: Current, *, discarded: bool, keep_logits: bool,
) -> Callable[[Any], contextlib.AbstractContextManager[None]]:  # fmt: skip
    """Wrap the service's ``dp_manager.set_image_annotation`` (and a table-structure service's
    ``prepare_np_image``) on the instances; return ``serving(page)``, the context in which the
    service serves a page, whose rows it stages when the page is done."""
    detector = component.predictor
    kind, labels, dropped = kind_of(detector), detector_labels(detector), dropped_columns(detector)
    padder = getattr(component, "padder", None)

    def around_store(original: Any) -> Any:
        @functools.wraps(original)
        def set_image_annotation(*args: Any, **kwargs: Any) -> Any:
            ann_id = original(*args, **kwargs)
            serving = current.get(current.serving)
            result = args[0] if args else kwargs.get("detect_result")
            if ann_id is not None and serving is not None and serving.component is component:
                known = serving.results.get(id(result))
                if known is not None and known[2] is result:  # not one a generator made
                    forward = known[0]
                    forward.stored.append(known[1])
                    forward.ids.append(ann_id)
                    forward.at.append(len(serving.page.annotations) - 1)  # dumped last
            return ann_id

        return set_image_annotation

    def around_prepare(original: Any) -> Any:
        @functools.wraps(original)
        def prepare_np_image(sub_image_ann: Any) -> Any:
            serving = current.get(current.serving)
            if serving is not None and serving.component is component:
                serving.parent = sub_image_ann
            return original(sub_image_ann)

        return prepare_np_image

    wrap(component.dp_manager, "set_image_annotation", around_store, stack)
    if isinstance(component, dd.SubImageLayoutService):
        wrap(component, "prepare_np_image", around_prepare, stack)

    @contextlib.contextmanager
    def serving(page: Any) -> Iterator[None]:
        state = _Serving(component, page)
        with current.set(current.serving, state):
            yield
        forwards = [f for f in state.forwards if f.logits is not None]
        if forwards:  # only when serve returned: an exception leaves the page without rows
            boxes = page_boxes(page, forwards, kind, discarded, padder)
            make = functools.partial(page_rows, forwards, page.image_id, boxes, kind, labels,
                                     dropped, discarded, keep_logits)  # fmt: skip
            stage(make)

    return serving


def install(detector: Any, service: Any, head: str, host: CaptureHost, stack: contextlib.ExitStack,
            wrap: Any, wrapped: set[int],
            current: Current) -> Callable[[Any], Any] | None:  # fmt: skip
    """Wrap ``detector`` (once, however many services share it, see ``wrapped``) and its
    ``service`` (None: a detector captured on its own) for head ``head``, all with the
    capture's ``current``; returns the service's ``serving(page)`` context (None without a
    service)."""
    import deepdoctection as dd

    options = host.options
    if options.temperature != 1.0 or options.activation != "auto":
        raise ValueError(
            f"{head}: element rows are the detector's own scores (exact against what "
            "deepdoctection stores), so activation= and temperature= do not apply to them; "
            "select the classifier heads with heads= to use those options"
        )
    stage = functools.partial(host.stage_rows, head)
    if id(detector) not in wrapped:
        wrapped.add(id(detector))
        wrap_detector(detector, wrap, stack, current, keep_logits=options.keep_logits,
                      bare=None if service is not None else stage)  # fmt: skip
    if service is None:
        return None
    return service_serving(dd, service, wrap, stack, stage, current, discarded=options.discarded,
                           keep_logits=options.keep_logits)  # fmt: skip
