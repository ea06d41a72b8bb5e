"""The element rows of a deepdoctection detector's forwards: what each ``predict`` call saw and
kept ([`Forward`][Forward]), and the rows made of it when the capture stores them (see
[`detectors`][probhook.integrations.deepdoctection.detectors] for how the forwards are taken).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probhook.detections import (
    Detections,
    ElementRows,
    activate,
    element_rows,
    query_boxes,
)
from probhook.elements import ELEMENT_COLUMNS
from probhook.heads import MappedRows


@dataclass
class Forward:
    """One ``predict`` call: what post-processing saw and kept, and what became elements."""

    parent: Any  # the annotation whose image the detector saw; None: the page
    logits: Any = None  # (queries, columns), a view of deepdoctection's CPU tensor
    pred_boxes: Any = None  # (queries, 4) relative (cx, cy, w, h)
    size: tuple[int, int] = (0, 0)  # (height, width) of the detector's input image
    threshold: float = 0.0
    top_k: int | None = None
    candidates: Detections = field(default_factory=Detections.empty)
    results: list[tuple[Any, ...]] = field(default_factory=list)  # what predict returned
    stored: list[int] = field(default_factory=list)  # indices into returned, in stored order
    ids: list[str] = field(default_factory=list)  # their annotation ids
    at: list[int] = field(default_factory=list)  # where each is in the page's annotations

    def take(self, arguments: dict[str, Any], candidates: dict[str, Any]) -> None:
        """Keep what ``post_process_object_detection`` was given and returned: views of the
        CPU tensors deepdoctection made (no copy; activated when the rows are made)."""
        outputs = arguments["outputs"]
        self.logits = outputs["logits"][0].detach().numpy()
        self.pred_boxes = outputs["pred_boxes"][0].detach().numpy()
        height, width = arguments["target_sizes"][0]
        self.size = (int(height), int(width))
        self.threshold, self.top_k = float(arguments["threshold"]), arguments.get("top_k")
        self.candidates = Detections(*(candidates[k].detach().numpy()
                                       for k in ("labels", "scores", "boxes")))  # fmt: skip

    def mapped(self, kind: str, dropped: frozenset[int], discarded: bool) -> ElementRows:
        """This forward's rows (see [`probhook.detections.element_rows`][])."""
        return element_rows(activate(self.logits, kind), kind, query_boxes=self.query_boxes(),
                            threshold=self.threshold, candidates=self.candidates,
                            returned=self.returned(), stored=self.stored, top_k=self.top_k,
                            dropped=dropped, discarded=discarded)  # fmt: skip

    def query_boxes(self) -> Any:
        """Every query's box in the detector's input-image pixels."""
        return query_boxes(self.pred_boxes, *self.size)

    def keep_returned(self, results: list[Any]) -> None:
        """What ``predict`` returned, as it was then: a padder gives each result a new box
        afterwards (the box list itself is not changed)."""
        self.results = [(r.class_id, r.score, r.box, r.class_name) for r in results]

    def returned(self) -> Detections:
        """What ``predict`` returned, in model columns (deepdoctection's class id - 1)."""
        results = self.results
        return Detections(np.array([r[0] - 1 for r in results], np.int64),
                          np.array([r[1] for r in results], np.float64),
                          np.array([r[2] for r in results], np.float64).reshape(-1, 4))  # fmt: skip

    def names(self) -> list[str]:
        """The category each returned detection got."""
        return [str(getattr(r[3], "value", r[3])) for r in self.results]


def discarded_key(source: str, query: int) -> str:
    """The key of a query that gave no element: the id of the image the detector saw (the page,
    or the table for table structure) and the query, ``"<id>#q<query>"``."""
    return f"{source}#q{query}"


def page_box(ann: Any, image_id: str, width: float, height: float) -> tuple[int, int, int, int]:
    """An annotation's box in page pixels, as deepdoctection's page view gives it: its box in
    the page (``ann.get_bounding_box(image_id)``), made absolute as ``BoundingBox.transform``
    does (upper left rounded half down, lower right half up), without building a new box (11 µs
    an element)."""
    box = ann.get_bounding_box(image_id)
    if box.absolute_coords:
        return int(box.ulx), int(box.uly), int(box.lrx), int(box.lry)
    return (_half_down(box.ulx * width), _half_down(box.uly * height),
            _half_up(box.lrx * width), _half_up(box.lry * height))  # fmt: skip


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _half_down(x: float) -> int:
    f = math.floor(x)
    return int(f if x - f <= 0.5 else f + 1)


def annotation_id(ann: Any) -> Any:
    """``ann.annotation_id``, read from pydantic's private attributes where deepdoctection keeps
    it (its property costs 2.5 µs a call)."""
    private = getattr(ann, "__pydantic_private__", None)
    return private["_annotation_id"] if private else ann.annotation_id


def page_boxes(page: Any, forwards: list[Forward], kind: str, discarded: bool,
                padder: Any) -> list[Any]:  # fmt: skip
    """Per forward, the page boxes of its stored elements (and, with ``discarded``, of every
    query): read now, while the page is as the service left it. Each element is where the
    service put it in the page's annotations, else (moved since) looked up by id."""
    annotations = page.annotations
    image_id, width, height = page.image_id, page.width, page.height
    out = []
    for forward in forwards:
        anns = [annotations[at] if at < len(annotations) else None for at in forward.at]
        if any(a is None or annotation_id(a) != i for a, i in zip(anns, forward.ids, strict=True)):
            found = {a.annotation_id: a for a in page.get_annotation(annotation_ids=forward.ids)}
            anns = [found[i] for i in forward.ids]
        boxes = [page_box(a, image_id, width, height) for a in anns]
        stored = np.array(boxes, np.int64).reshape(-1, 4)
        queries = None
        if discarded:  # where each query would have been: unpadded, moved into the page
            queries = forward.query_boxes()
            if padder is not None:
                queries = padder.inverse_apply_coords(queries)
            if forward.parent is not None:
                ulx, uly, _, _ = page_box(forward.parent, image_id, width, height)
                queries = queries + np.array([ulx, uly, ulx, uly])
            queries = np.rint(queries).astype(np.int64)
        out.append((stored, queries))
    return out


def page_rows(forwards: list[Forward], image_id: str, boxes: list[Any], kind: str,
              labels: tuple[str, ...], dropped: frozenset[int], discarded: bool,
              keep_logits: bool) -> MappedRows:  # fmt: skip
    """The rows of one page's forwards (made when the capture stores them)."""
    probs, logits, keys, parts = [], [], [], []
    for forward, (stored_boxes, query_page_boxes) in zip(forwards, boxes, strict=True):
        rows, names = forward.mapped(kind, dropped, discarded), forward.names()
        n_kept = len(forward.stored)
        lost = rows.query[n_kept:]
        source = image_id if forward.parent is None else forward.parent.annotation_id
        keys += forward.ids + [discarded_key(source, q) for q in lost.tolist()]
        box = stored_boxes if query_page_boxes is None else np.concatenate(
            [stored_boxes, query_page_boxes[lost]])  # fmt: skip
        parts.append({
            "category": [names[e] for e in forward.stored]
            + [labels[c] for c in rows.column[n_kept:].tolist()],
            "category_id": rows.column + 1,
            "query": rows.query,
            "box": box,
            "parent_id": [None if forward.parent is None else forward.parent.annotation_id]
            * len(rows),
            "discarded": rows.reason,
        })  # fmt: skip
        probs.append(rows.probs)
        logits.append(forward.logits[rows.query] if keep_logits else None)
    return mapped(probs, logits, keys, parts, kind)


def bare_rows(forward: Forward, kind: str, keep_logits: bool) -> MappedRows:
    """A detector captured on its own: one row per detection ``predict`` returned, keyed by
    its position, with its box as returned (input-image pixels, rounded)."""
    rows = forward.mapped(kind, frozenset(), discarded=False)
    n = len(rows)
    part = {"category": forward.names(), "category_id": rows.column + 1,
            "query": rows.query, "box": np.rint(forward.returned().boxes).astype(np.int64),
            "parent_id": [None] * n, "discarded": rows.reason}  # fmt: skip
    logits = forward.logits[rows.query] if keep_logits else None
    return mapped([rows.probs], [logits], list(range(n)), [part], kind)


def mapped(probs: list[Any], logits: list[Any], keys: list[Any], parts: list[dict[str, Any]],
            kind: str) -> MappedRows:  # fmt: skip
    box = np.concatenate([p.pop("box") for p in parts])
    columns: dict[str, Any] = {  # int columns as arrays, the others as lists
        name: np.concatenate([p[name] for p in parts]) if ELEMENT_COLUMNS[name] == "int"
        else [v for p in parts for v in p[name]]
        for name in parts[0]
    }  # fmt: skip
    columns.update(zip(("ulx", "uly", "lrx", "lry"), np.ascontiguousarray(box.T), strict=True))
    columns["activation"] = kind
    assert set(columns) == set(ELEMENT_COLUMNS)
    kept = None if logits[0] is None else np.ascontiguousarray(np.concatenate(logits), np.float32)
    return MappedRows(np.concatenate(probs), keys, columns, kept)
