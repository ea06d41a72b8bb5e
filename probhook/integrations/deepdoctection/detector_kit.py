"""Offline builders for DETR-family detectors (per-element heads), part of ``probhook.testing``.

Tiny seeded Table Transformer and Deformable DETR models (a timm ResNet-18 backbone with random
weights, one encoder layer, a few queries) saved as model folders and loaded by deepdoctection's
own ``HFDetrDerivedDetector``; the services around them (``ImageLayoutService`` for the layout of
a page, ``SubImageLayoutService`` for the structure of each table); and pages rendered from the
sample PDFs shipped with probhook:

    from probhook.testing import build_detector, make_detector_pipe, render_pages, run_pipe

    layout = build_detector("deformable_detr", tmp_path / "layout")
    cells = build_detector("table_transformer", tmp_path / "cells", labels=CELL_LABELS)
    pages = run_pipe(make_detector_pipe(layout, cells), render_pages())

The layout detector's classes include ``table``, so the table-structure service gets tables to
work on. The heads are scaled so that random weights give several elements per page, of several
classes, some close calls between two classes, some queries removed by non-maximum suppression
and, for Deformable DETR, queries that give two elements of different classes.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CELL_LABELS",
    "DETECTOR_KINDS",
    "LAYOUT_LABELS",
    "DetectorKind",
    "TinyDetector",
    "build_detector",
    "detector_for",
    "make_cell_service",
    "make_detector_pipe",
    "make_layout_service",
    "render_pages",
    "sample_pdfs",
]

DetectorKind = Literal["table_transformer", "deformable_detr"]
DETECTOR_KINDS: tuple[DetectorKind, ...] = ("table_transformer", "deformable_detr")
LAYOUT_LABELS: tuple[str, ...] = (
    "text", "title", "list", "table", "figure", "caption", "footnote", "formula", "page_footer",
    "page_header", "section_header",
)  # fmt: skip
"""DocLayNet-like layout classes (registered deepdoctection object types)."""
CELL_LABELS: tuple[str, ...] = (
    "table", "column", "row", "column_header", "projected_row_header", "spanning",
)  # fmt: skip
"""The classes of deepdoctection's Table Transformer structure model."""

_ARCHITECTURES = {
    "table_transformer": ("TableTransformerConfig", "TableTransformerForObjectDetection",
                          "DetrImageProcessor"),
    "deformable_detr": ("DeformableDetrConfig", "DeformableDetrForObjectDetection",
                        "DeformableDetrImageProcessor"),
}  # fmt: skip


@dataclass(frozen=True)
class TinyDetector:
    """A saved tiny detector: ``path`` holds ``config.json``, ``model.safetensors`` and
    ``preprocessor_config.json``; ``labels`` are its classes in column order."""

    kind: DetectorKind
    path: Path
    labels: tuple[str, ...]

    @property
    def categories(self) -> dict[int, str]:
        """deepdoctection's categories: ``{1: labels[0], ...}``."""
        return {i + 1: label for i, label in enumerate(self.labels)}


def build_detector(
    kind: DetectorKind,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    queries: int = 24,
    seed: int = 0,
    class_scale: float | None = None,
    class_bias: float | None = None,
    box_scale: float = 1.5,
    box_size: float = 0.15,
    width: int = 32,
    layers: tuple[int, int] = (1, 2),
) -> TinyDetector:
    """Build a seeded random ``kind`` detector and save it to ``path`` (a few seconds, offline).

    ``labels`` default to [`LAYOUT_LABELS`][LAYOUT_LABELS] (Deformable DETR) or
    [`CELL_LABELS`][CELL_LABELS] (Table Transformer). ``class_scale`` (the spread of the class
    logits) and ``class_bias`` (added to every class logit; Deformable DETR's sigmoid scores
    need a negative one, or every query passes the threshold in every class) set how many
    queries pass; ``box_scale`` spreads the boxes, ``box_size`` is their typical width and
    height (a fraction of the image). ``width`` (``d_model``) and ``layers`` (encoder, decoder)
    make larger models: ``width=256, layers=(6, 6), queries=300`` is the size of
    deepdoctection's default layout model (with a ResNet-18 backbone, not its ResNet-50).
    """
    import torch
    import transformers as tf

    if kind not in _ARCHITECTURES:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {DETECTOR_KINDS}")
    sigmoid = kind == "deformable_detr"
    if labels is None:
        labels = LAYOUT_LABELS if sigmoid else CELL_LABELS
    if class_scale is None:
        class_scale = 2.5 if sigmoid else 0.5
    if class_bias is None:
        class_bias = -3.0 if sigmoid else 0.0
    config_name, model_name, processor_name = _ARCHITECTURES[kind]
    ffn, heads = (4 * width, 8) if width >= 256 else (2 * width, 2)
    common: dict[str, Any] = {
        "use_timm_backbone": True, "backbone": "resnet18", "use_pretrained_backbone": False,
        "d_model": width, "encoder_layers": layers[0], "decoder_layers": layers[1],
        "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn, "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "num_queries": queries, "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }  # fmt: skip
    if kind == "deformable_detr":
        # transformers ties the box heads of the decoder layers: two layers at least
        common.update(num_feature_levels=1, decoder_n_points=2, encoder_n_points=2)
    config = getattr(tf, config_name)(**common)
    torch.manual_seed(seed)
    model = getattr(tf, model_name)(config).eval()
    processor = getattr(tf, processor_name)(size={"shortest_edge": 256, "longest_edge": 384})
    with torch.no_grad():  # transformers starts these heads at zero or near it
        # Table Transformer's queries differ only in where they look: spread them (Deformable
        # DETR's reference points come from these embeddings, which must stay near zero)
        model.model.query_position_embeddings.weight.normal_(0.0, 1.0 if sigmoid else 20.0)
        scaled = [(h, class_scale) for h in _class_heads(model)]
        for mlp in _box_heads(model):  # ReLU layers at He scale, the last one at box_scale
            scaled += [(layer, 2**0.5) for layer in mlp.layers[:-1]] + [(mlp.layers[-1], box_scale)]
        for layer, std in scaled:
            layer.weight.normal_(0.0, std / layer.weight.shape[1] ** 0.5)
            layer.bias.zero_()
        for head in _class_heads(model):
            head.bias.fill_(class_bias)
        size = math.log(box_size / (1.0 - box_size))  # the logit of a box side
        for mlp in _box_heads(model):
            mlp.layers[-1].bias[2:].fill_(size)
    _spread_queries(model, processor)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return TinyDetector(kind, out, tuple(labels))


def _spread_queries(model: Any, processor: Any) -> None:
    """Center and scale the decoder's last layer norm on a few sample pages.

    A random Table Transformer's queries come out of the decoder nearly equal (their inputs are
    zeros, they differ only in where they look, and a blank page looks alike everywhere): a
    random head would give every query the same class and box. Calibrated on sample pages, the
    layer norm keeps only what differs between queries and pages, at unit scale.
    """
    import torch

    decoder = model.model.decoder
    norm = getattr(decoder, "layernorm", None) or decoder.layers[-1].final_layer_norm
    seen: list[Any] = []

    def keep(module: Any, args: Any, output: Any) -> None:
        x = args[0]
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        seen.append(((x - mean) / (var + module.eps).sqrt()).reshape(-1, x.shape[-1]))

    handle = norm.register_forward_hook(keep)
    try:
        with torch.no_grad():
            for image in _calibration_images():
                model(**processor(images=image, return_tensors="pt"))
    finally:
        handle.remove()
    normalized = torch.cat(seen)
    center, scale = normalized.mean(0), normalized.std(0).mean()
    with torch.no_grad():
        norm.weight.fill_(1.0 / float(scale))
        norm.bias.copy_(-center / scale)


def _calibration_images() -> list[Any]:
    """Sample pages, and crops of them as a table-structure model sees them."""
    rng = random.Random(0)
    images = []
    for page in render_pages(sample_pdfs()[:4], shuffle=False):
        pixels = page.image
        height, width = pixels.shape[:2]
        images.append(pixels)
        for _ in range(2):  # about the size of the layout detector's elements
            h, w = rng.randint(height // 12, height // 3), rng.randint(width // 8, width // 2)
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            images.append(pixels[top : top + h, left : left + w])
    return images


def _class_heads(model: Any) -> list[Any]:
    head = model.class_embed if hasattr(model, "class_embed") else model.class_labels_classifier
    return list(head) if hasattr(head, "__iter__") else [head]


def _box_heads(model: Any) -> list[Any]:
    head = model.bbox_embed if hasattr(model, "bbox_embed") else model.bbox_predictor
    return list(head) if hasattr(head, "__iter__") and not hasattr(head, "layers") else [head]


def detector_for(
    tiny: TinyDetector, *, filter_categories: Sequence[str] | None = None, device: str = "cpu"
) -> Any:
    """deepdoctection's ``HFDetrDerivedDetector`` for ``tiny``."""
    import deepdoctection as dd

    return dd.HFDetrDerivedDetector(
        tiny.path / "config.json",
        tiny.path / "model.safetensors",
        tiny.path / "preprocessor_config.json",
        tiny.categories,
        device=device,
        filter_categories=list(filter_categories) if filter_categories else None,
    )


def make_layout_service(
    tiny: TinyDetector, *, filter_categories: Sequence[str] | None = None
) -> Any:
    """An ``ImageLayoutService`` around ``tiny``, set up as deepdoctection's analyzer does
    (``to_image=True, crop_image=True``: each element gets its own image, which the
    table-structure service reads)."""
    import deepdoctection as dd

    detector = detector_for(tiny, filter_categories=filter_categories)
    return dd.ImageLayoutService(detector, to_image=True, crop_image=True)


def make_cell_service(
    tiny: TinyDetector,
    *,
    filter_categories: Sequence[str] | None = None,
    generator: bool = False,
    padding: int = 0,
) -> Any:
    """A ``SubImageLayoutService`` running ``tiny`` over every ``table`` of a page.

    ``generator=True`` adds deepdoctection's ``DetectResultGenerator`` (a full-table element of
    score 0 for every class the detector found none of: such elements come from no query);
    ``padding`` pads each crop by that many pixels on every side (a ``PadTransform``).
    """
    import deepdoctection as dd

    detector = detector_for(tiny, filter_categories=filter_categories)
    result_generator = None
    if generator:
        categories = detector.categories.get_categories(as_dict=True, name_as_key=True)
        result_generator = dd.DetectResultGenerator(categories_name_as_key=categories)
    padder = None
    if padding:
        from dd_core.utils.transform import PadTransform

        padder = PadTransform(pad_top=padding, pad_right=padding, pad_bottom=padding,
                              pad_left=padding)  # fmt: skip
    return dd.SubImageLayoutService(detector, ["table"], detect_result_generator=result_generator,
                                    padder=padder)  # fmt: skip


def make_detector_pipe(
    layout: TinyDetector | None = None,
    cells: TinyDetector | None = None,
    *,
    layout_filter: Sequence[str] | None = None,
    cell_filter: Sequence[str] | None = None,
    generator: bool = False,
) -> Any:
    """A ``DoctectionPipe`` with a layout service for ``layout`` and a table-structure service
    for ``cells`` (either may be left out)."""
    import deepdoctection as dd

    components = []
    if layout is not None:
        components.append(make_layout_service(layout, filter_categories=layout_filter))
    if cells is not None:
        components.append(make_cell_service(cells, filter_categories=cell_filter,
                                            generator=generator))  # fmt: skip
    if not components:
        raise ValueError("make_detector_pipe needs a layout detector, a cell detector or both")
    return dd.DoctectionPipe(pipeline_component_list=components)


def sample_pdfs() -> list[Path]:
    """The sample PDFs shipped with probhook (invoices, letters, forms, memos), sorted."""
    return sorted((Path(__file__).parents[2] / "demo" / "samples").glob("*.pdf"))


def render_pages(
    pdfs: Sequence[str | os.PathLike[str]] | None = None,
    *,
    dpi: int = 72,
    shuffle: bool = True,
    seed: int = 0,
) -> list[Any]:
    """Every page of ``pdfs`` (default: [`sample_pdfs`][sample_pdfs]) as a deepdoctection
    ``Image`` with its pixels (rendered by pypdfium2, as deepdoctection renders), file name,
    location, ``document_id`` (one per PDF) and ``page_number``; shuffled unless
    ``shuffle=False``. 72 dpi keeps pages small (612x792 for a letter page)."""
    import deepdoctection as dd
    import numpy as np
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    from probhook.integrations.deepdoctection.adapter import page_offset

    pages = []
    for path in map(Path, pdfs if pdfs is not None else sample_pdfs()):
        document = pdfium.PdfDocument(os.fspath(path))
        try:
            document_id = dd.get_uuid_from_str(os.fspath(path.resolve()))
            for number in range(len(document)):
                rgb = np.asarray(document[number].render(scale=dpi / 72).to_pil().convert("RGB"))
                pixels = np.ascontiguousarray(rgb[..., ::-1])  # BGR, as deepdoctection keeps it
                image = dd.Image(file_name=f"{path.stem}_{number + 1}{path.suffix}",
                                 location=os.fspath(path.resolve()))  # fmt: skip
                image.document_id = document_id
                image.page_number = number + 1 - page_offset(dd.__version__)
                image.image = pixels
                pages.append(image)
        finally:
            document.close()
    if shuffle:
        random.Random(seed).shuffle(pages)
    return pages
