"""Skipping page pixels that no component of a deepdoctection analyzer reads.

deepdoctection renders every PDF page to a 300-dpi image, and its LayoutLM feature mapper resizes
that image and turns it into a tensor for every page, even for models that never receive it:
LayoutLM (v1), LiLT and BERT/XLM-R text classifiers read words and boxes only. On the shipped
demo model that pixel work is most of the time per page. :func:`skip_unused_pixels` removes it
with changes to the analyzer *instance* only (no deepdoctection class is patched):

1. Before each language-model component of a pixel-free family, when nothing after it reads
   pixels, ``serve`` is wrapped on the instance to drop the page image
   (``Image.clear_image()``, which keeps the page's width and height): no resize, no tensor.
2. When *no* component reads pixels (PDF text extraction, word matching, reading order and such
   classifiers) and deepdoctection renders with pdfium, ``analyze(path=<one PDF>)`` is wrapped
   on the instance to go through deepdoctection's own ``dataset_dataflow=`` entry with pages
   that carry the PDF bytes and the exact pixel size a render would have had
   (``ceil(points * DPI / 72)``, pypdfium2's rule), but no pixels: nothing is rendered.

Words, boxes and therefore every probability stay the same, bit for bit (tested against the
bare analyzer). LayoutLMv2/v3 read the image: analyzers with them keep their pixels. Pages come
out of the analyzer without ``page.image``; call this before ``capture_probs(analyzer)``.

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
        if type(component).__name__ not in LM_SERVICES or reads_pixels(component):
            continue
        if any(reads_pixels(later) for later in components[i + 1 :]):
            continue
        _drop_image_before_serve(component)
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
