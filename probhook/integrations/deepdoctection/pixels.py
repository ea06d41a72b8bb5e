"""Skipping page pixels that no component of a deepdoctection analyzer reads.

deepdoctection renders every PDF page to a 300-dpi image, and its LayoutLM feature mapper resizes
that image and turns it into a tensor for every page, even for models that never receive it:
LayoutLM (v1), LiLT and BERT/XLM-R text classifiers read words and boxes only. On the shipped
demo model that pixel work is most of the time per page. [`skip_unused_pixels`][skip_unused_pixels]
removes it with changes to the analyzer *instance* only (no deepdoctection class is patched):

1. Before each language-model component of a pixel-free family, when nothing after it reads
   pixels, ``serve`` is wrapped on the instance to drop the page image
   (``Image.clear_image()``, which keeps the page's width and height): no resize, no tensor.
2. When *no* component reads pixels (PDF text extraction, word matching, reading order and such
   classifiers) and deepdoctection renders with pdfium, ``analyze(path=<one PDF>)`` is wrapped
   on the instance to go through deepdoctection's own ``dataset_dataflow=`` entry with pages
   that carry the PDF bytes and the exact pixel size a render would have had
   (``ceil(points * DPI / 72)``, pypdfium2's rule), but no pixels: nothing is rendered.
3. LayoutLMv2/v3 read the image, so their pages keep it; a v2/v3 sequence classifier service's
   feature mapping (an instance attribute) is swapped for one that lets dd-core build the text
   features, then resizes the page as dd-core does (PIL bilinear) without its two extra
   full-page copies and makes the page tensor with ``torch.from_numpy`` instead of
   ``torch.tensor`` on a list of arrays, which copies element by element. Anything unusual
   (sliding windows, overflowing tokens, an OpenCV resize, an odd page array) goes through
   dd-core's own mapping.

Words, boxes and therefore every probability stay the same, bit for bit (tested against the
bare analyzer). Pages of pixel-free pipelines come out without ``page.image``. Call this before
``capture_probs(analyzer)``:

    import deepdoctection as dd
    from probhook import capture_probs
    from probhook.integrations.deepdoctection import skip_unused_pixels

    analyzer = skip_unused_pixels(dd.get_dd_analyzer(config_overwrite=[...]))
    with capture_probs(analyzer) as cap:
        pages = list(analyzer.analyze(path="scan.pdf"))
"""

from __future__ import annotations

import math
import os
from typing import Any

PIXEL_FREE_WRAPPERS = frozenset({
    "HFLayoutLmSequenceClassifier", "HFLayoutLmTokenClassifier",
    "HFLiltSequenceClassifier", "HFLiltTokenClassifier",
    "HFLmSequenceClassifier", "HFLmTokenClassifier",
})  # fmt: skip
"""deepdoctection LM wrappers whose model is never given the page image (dd 1.x)."""
PIXEL_WRAPPERS = frozenset({
    "HFLayoutLmv2SequenceClassifier", "HFLayoutLmv2TokenClassifier",
    "HFLayoutLmv3SequenceClassifier", "HFLayoutLmv3TokenClassifier",
})  # fmt: skip
"""deepdoctection LM wrappers whose model reads the page image (dd 1.x)."""


LM_SERVICES = ("LMSequenceClassifierService", "LMTokenClassifierService")
ANNOTATION_SERVICES = ("MatchingService", "TextOrderService")
"""Components that work on annotations only."""
_MARK = "__probhook_drops_pixels__"


def reads_pixels(component: Any) -> bool:
    """Whether a pipeline component may read the page image (unknown components: True)."""
    from deepdoctection.extern.base import PdfMiner

    kind = type(component).__name__
    if kind in ANNOTATION_SERVICES:
        return False
    if kind == "TextExtractionService":  # PDF text: from the PDF bytes, scaled to width/height
        return not isinstance(getattr(component, "predictor", None), PdfMiner)
    if kind in LM_SERVICES:
        return type(getattr(component, "language_model", None)).__name__ not in PIXEL_FREE_WRAPPERS
    return True


def pixels_needed(analyzer: Any) -> bool:
    """Whether any component of ``analyzer`` may read the page image."""
    return any(reads_pixels(c) for c in analyzer.pipe_component_list)


def skip_unused_pixels(analyzer: Any) -> Any:
    """Make ``analyzer`` (a ``DoctectionPipe``, e.g. from ``dd.get_dd_analyzer``) skip the page
    pixels that none of its components reads; returns ``analyzer``. Calling it twice is harmless.
    See the module docstring for what changes and what does not."""
    components = list(analyzer.pipe_component_list)
    for i, component in enumerate(components):
        pixel_free = type(component).__name__ in LM_SERVICES and not reads_pixels(component)
        if pixel_free and not any(reads_pixels(later) for later in components[i + 1 :]):
            _drop_image_before_serve(component)
        # sequence classifiers only: the token path (sliding windows) is not covered by tests
        sequence = type(component).__name__ == "LMSequenceClassifierService"
        if sequence and _maps_with_layoutlm_features(component):
            component.mapping_to_lm_input_func = pixel_layoutlm_features
    if not pixels_needed(analyzer) and not getattr(analyzer.analyze, _MARK, False):
        analyzer.analyze = _analyze_without_rendering(analyzer.analyze)
    return analyzer


def _drop_image_before_serve(component: Any) -> None:
    serve = component.serve
    if getattr(serve, _MARK, False):
        return

    def drop_then_serve(dp: Any) -> Any:
        dp.clear_image()  # keeps width and height: boxes scale exactly as before
        return serve(dp)

    setattr(drop_then_serve, _MARK, True)
    component.serve = drop_then_serve


def renders_with_pdfium() -> bool:
    """deepdoctection renders PDFs with pypdfium2 at a fixed DPI (its default set-up), so the
    pixel size of a page can be computed without rendering it."""
    from dd_core.utils.env_info import ENV_VARS_TRUE

    dpi = os.environ.get("DPI", "0")
    return os.environ.get("USE_DD_PDFIUM") in ENV_VARS_TRUE and dpi.isdigit() and int(dpi) > 0


def _analyze_without_rendering(analyze: Any) -> Any:
    def analyze_pdf_without_rendering(**kwargs: Any) -> Any:
        path = kwargs.get("path")
        single_pdf = (
            isinstance(path, (str, os.PathLike))
            and os.fspath(path).lower().endswith(".pdf")
            and os.path.isfile(path)
        )
        if single_pdf and kwargs.get("bytes") is None and renders_with_pdfium():
            assert isinstance(path, (str, os.PathLike))
            kwargs = dict(kwargs)
            del kwargs["path"]
            kwargs["dataset_dataflow"] = pdf_pages_without_pixels(
                path, kwargs.pop("max_datapoints", None), kwargs.pop("document_id", None)
            )
        return analyze(**kwargs)

    setattr(analyze_pdf_without_rendering, _MARK, True)
    return analyze_pdf_without_rendering


def pdf_pages_without_pixels(
    path: str | os.PathLike[str], max_datapoints: int | None = None, document_id: str | None = None
) -> Any:
    """A PDF's pages as deepdoctection ``Image`` s, as ``analyze(path=...)`` makes them (same
    file name, location, page number, document id, so the same ``image_id``; PDF bytes; the
    width and height of the render) but without rendering them; for ``dataset_dataflow=``."""
    from dd_core.dataflow import MapData
    from deepdoctection.pipe.doctectionpipe import DoctectionPipe

    pages = DoctectionPipe.doc_to_dataflow(path, max_datapoints, document_id)
    dpi = int(os.environ["DPI"])
    return MapData(pages, lambda dp: _page_without_pixels(dp, dpi, document_id))


def _page_without_pixels(dp: dict[str, Any], dpi: int, document_id: str | None) -> Any:
    """dd-core's ``to_image`` for a PDF page, without ``convert_pdf_bytes_to_np_array_v2``."""
    from dd_core.datapoint.image import Image
    from dd_core.mapper.maputils import MappingContextManager

    file_name = str(dp.get("file_name", ""))
    with MappingContextManager(dp_name=file_name) as context:
        location = str(dp.get("location", ""))
        image = Image(file_name=file_name, location=location or str(dp.get("path", "")))
        image.page_number = int(dp.get("page_number", 1))
        if dp.get("document_id") or document_id:
            image.document_id = dp.get("document_id") or document_id
        image.pdf_bytes = dp["pdf_bytes"]
        image.set_width_height(*rendered_size(dp["pdf_bytes"], dpi))
    return None if context.context_error else image


def rendered_size(pdf_bytes: bytes, dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of the first page of ``pdf_bytes`` rendered at ``dpi`` by
    pypdfium2 (``PdfPage.render(scale=dpi / 72)``: ``ceil(points * scale)``), without rendering."""
    import pypdfium2  # type: ignore[import-untyped]

    document = pypdfium2.PdfDocument(pdf_bytes)
    try:
        page = document[0]
        scale = dpi * 1 / 72  # the expression dd-core passes to render()
        size = math.ceil(page.get_width() * scale), math.ceil(page.get_height() * scale)
        page.close()
    finally:
        document.close()
    return size


def _maps_with_layoutlm_features(component: Any) -> bool:
    """A LayoutLMv2/v3 service using dd-core's ``image_to_layoutlm_features``."""
    model: Any = getattr(component, "language_model", None)
    return (
        type(model).__name__ in PIXEL_WRAPPERS
        and model.image_to_features_mapping() == "image_to_layoutlm_features"
    )


class _TextOnly:
    """A page seen without its image (everything else is the page's own), so that dd-core
    builds the text features of a LayoutLM input and leaves the pixels to the caller."""

    __slots__ = ("_page",)
    image = None

    def __init__(self, page: Any) -> None:
        object.__setattr__(self, "_page", page)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._page, name)


def pixel_layoutlm_features(
    tokenizer: Any,
    padding: str = "max_length",
    truncation: bool = True,
    return_overflowing_tokens: bool = False,
    return_tensors: str | None = "pt",
    input_width: int = 1000,
    input_height: int = 1000,
    image_width: int = 1000,
    image_height: int = 1000,
    color_mode: str = "BGR",
    pixel_mean: Any = None,
    pixel_std: Any = None,
    segment_positions: Any = None,
    sliding_window_stride: int = 0,
) -> Any:
    """``dd_core.mapper.laylmstruct.image_to_layoutlm_features`` (same parameters, same output,
    bit for bit) with the page image resized and tensorised without extra copies."""
    from dd_core.mapper.laylmstruct import image_to_layoutlm_features

    options = dict(tokenizer=tokenizer, padding=padding, truncation=truncation,
                   return_overflowing_tokens=return_overflowing_tokens,
                   return_tensors=return_tensors, input_width=input_width,
                   input_height=input_height, image_width=image_width, image_height=image_height,
                   color_mode=color_mode, pixel_mean=pixel_mean, pixel_std=pixel_std,
                   segment_positions=segment_positions,
                   sliding_window_stride=sliding_window_stride)  # fmt: skip
    dd_mapping = image_to_layoutlm_features(**options)
    simple = return_tensors == "pt" and not return_overflowing_tokens and not sliding_window_stride

    def features(dp: Any) -> Any:
        if not (simple and _plain_page(dp)):
            return dd_mapping(dp)
        result = dd_mapping(_TextOnly(dp))
        if result is None:
            return None
        # dd-core: the page resized to (image_width, image_height), as its input size otherwise
        key, pixels = _resized_pixels(dp, image_width, image_height, color_mode)
        if pixel_mean is not None and pixel_std is not None:
            from dd_core.utils.transform import normalize_image

            pixels = normalize_image(pixels, pixel_mean, pixel_std)
        result[key] = _page_tensor(pixels, len(result["input_ids"]))
        return result

    return features


def _plain_page(dp: Any) -> bool:
    """An HxWx3 uint8 page of the size dd-core expects, resized by PIL (dd-core's default)."""
    from dd_core.utils.viz import viz_handler

    image = dp.image
    return (
        image is not None
        and viz_handler.pkg_func_dict.get("resize") == "_pillow_resize"
        and image.ndim == 3
        and image.shape[2] == 3
        and image.dtype.name == "uint8"
        and image.shape[:2] == (dp.height, dp.width)
    )


def _resized_pixels(dp: Any, width: int, height: int, color_mode: str) -> tuple[str, Any]:
    """dd-core's ``_pillow_resize`` (BGR in, BGR out, bilinear) without its two full-page copies:
    PIL reads the BGR buffer directly; then the colour order of ``color_mode``."""
    import numpy as np
    from PIL import Image

    h, w = dp.image.shape[:2]
    page = Image.frombuffer("RGB", (w, h), np.ascontiguousarray(dp.image), "raw", "BGR", 0, 1)
    resized = page.resize(size=(int(width), int(height)), resample=Image.Resampling.BILINEAR,
                          box=None, reducing_gap=None)  # fmt: skip
    pixels = np.array(resized)  # RGB
    return ("pixel_values", pixels) if color_mode == "RGB" else ("image", pixels[:, :, ::-1])


def _page_tensor(pixels: Any, rows: int) -> Any:
    """dd-core's ``torch.tensor([p.astype("float32").transpose(2, 0, 1)] * rows)``, built in one
    numpy copy instead of element by element."""
    import numpy as np
    import torch

    one = np.ascontiguousarray(pixels.astype("float32").transpose(2, 0, 1))
    return torch.from_numpy(np.stack([one] * rows) if rows > 1 else one[None])
