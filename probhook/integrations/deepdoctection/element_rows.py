"""The element rows of a deepdoctection detector's forwards: what each ``predict`` call saw and
kept ([`Forward`][Forward]), and the rows made of it when the capture stores them (see
[`detectors`][probhook.integrations.deepdoctection.detectors] for how the forwards are taken).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probhook.detections import Detections, element_rows, query_boxes
from probhook.elements import ELEMENT_COLUMNS
from probhook.words import MappedRows


@dataclass
class Forward:
    """One ``predict`` call: what post-processing saw and kept, and what became elements."""

    parent: Any  # the annotation whose image the detector saw; None: the page
    probs: Any = None
    logits: Any = None
    boxes: Any = None  # (queries, 4) query boxes, input-image pixels
    threshold: float = 0.0
    top_k: int | None = None
    candidates: Detections = field(default_factory=Detections.empty)
    returned: Detections = field(default_factory=Detections.empty)
    names: list[str] = field(default_factory=list)  # category of each returned detection
    stored: list[int] = field(default_factory=list)  # indices into returned, in stored order
    ids: list[str] = field(default_factory=list)  # their annotation ids

    def take(self, arguments: dict[str, Any], candidates: dict[str, Any], kind: str,
             keep_logits: bool) -> None:  # fmt: skip
        """Keep what ``post_process_object_detection`` was given and returned (CPU tensors)."""
        import torch

        outputs = arguments["outputs"]
        with torch.no_grad():  # deepdoctection predicts without no_grad
            logits = outputs["logits"][:1].detach()
            # the post-processing's own function on the same tensor: the same bits
            probs = logits.softmax(-1) if kind == "softmax" else logits.sigmoid()
        self.probs = probs[0].numpy()
        self.logits = logits[0].float().numpy() if keep_logits else None
        height, width = arguments["target_sizes"][0]
        self.boxes = query_boxes(outputs["pred_boxes"][0].detach().numpy(), height, width)
        self.threshold, self.top_k = float(arguments["threshold"]), arguments.get("top_k")
        self.candidates = Detections(*(candidates[k].detach().numpy()
                                       for k in ("labels", "scores", "boxes")))  # fmt: skip

    def keep_returned(self, results: list[Any]) -> None:
        """What ``predict`` returned, as it was then (a padder moves the boxes afterwards)."""
        self.returned = Detections(
            np.array([r.class_id - 1 for r in results], np.int64),
            np.array([r.score for r in results], np.float64),
            np.array([r.box for r in results], np.float64).reshape(-1, 4),
        )
        self.names = [str(getattr(r.class_name, "value", r.class_name)) for r in results]


def discarded_key(source: str, query: int) -> str:
    """The key of a query that gave no element: the id of the image the detector saw (the page,
    or the table for table structure) and the query, ``"<id>#q<query>"``."""
    return f"{source}#q{query}"


def page_box(ann: Any, page: Any) -> tuple[int, int, int, int]:
    """An annotation's box in page pixels, as deepdoctection's page view gives it
    (``ann.get_bounding_box(page)``, made absolute)."""
    box = ann.get_bounding_box(page.image_id)
    if not box.absolute_coords:
        box = box.transform(page.width, page.height, absolute_coords=True)
    return int(box.ulx), int(box.uly), int(box.lrx), int(box.lry)


def page_boxes(page: Any, forwards: list[Forward], kind: str, discarded: bool,
                padder: Any) -> list[Any]:  # fmt: skip
    """Per forward, the page boxes of its stored elements (and, with ``discarded``, of every
    query): read now, while the page is as the service left it."""
    ids = [i for f in forwards for i in f.ids]
    anns = {a.annotation_id: a for a in page.get_annotation(annotation_ids=ids)} if ids else {}
    out = []
    for forward in forwards:
        stored = np.array([page_box(anns[i], page) for i in forward.ids], np.int64).reshape(-1, 4)
        queries = None
        if discarded:  # where each query would have been: unpadded, moved into the page
            queries = forward.boxes.copy()
            if padder is not None:
                queries = padder.inverse_apply_coords(queries)
            if forward.parent is not None:
                ulx, uly, _, _ = page_box(forward.parent, page)
                queries = queries + np.array([ulx, uly, ulx, uly])
            queries = np.rint(queries).astype(np.int64)
        out.append((stored, queries))
    return out


def page_rows(forwards: list[Forward], image_id: str, boxes: list[Any], kind: str,
              labels: tuple[str, ...], dropped: frozenset[int],
              discarded: bool) -> MappedRows:  # fmt: skip
    """The rows of one page's forwards (made when the capture stores them)."""
    probs, logits, keys, parts = [], [], [], []
    for forward, (stored_boxes, query_page_boxes) in zip(forwards, boxes, strict=True):
        rows = element_rows(forward.probs, kind, query_boxes=forward.boxes,
                            threshold=forward.threshold, candidates=forward.candidates,
                            returned=forward.returned, stored=forward.stored,
                            top_k=forward.top_k, dropped=dropped, discarded=discarded)  # fmt: skip
        n_kept = len(forward.stored)
        lost = rows.query[n_kept:]
        source = image_id if forward.parent is None else forward.parent.annotation_id
        keys += forward.ids + [discarded_key(source, q) for q in lost.tolist()]
        box = stored_boxes if query_page_boxes is None else np.concatenate(
            [stored_boxes, query_page_boxes[lost]])  # fmt: skip
        parts.append({
            "element_id": forward.ids + [None] * len(lost),
            "category": [forward.names[e] for e in forward.stored]
            + [labels[c] for c in rows.column[n_kept:].tolist()],
            "category_id": rows.column + 1,
            "query": rows.query,
            "box": box,
            "parent_id": [None if forward.parent is None else forward.parent.annotation_id]
            * len(rows),
            "discarded": rows.reason,
        })  # fmt: skip
        probs.append(rows.probs)
        logits.append(None if forward.logits is None else forward.logits[rows.query])
    return mapped(probs, logits, keys, parts, kind)


def bare_rows(forward: Forward, kind: str, labels: tuple[str, ...]) -> MappedRows:
    """A detector captured on its own: one row per detection ``predict`` returned, keyed by
    its position, with its box as returned (input-image pixels, rounded)."""
    rows = element_rows(forward.probs, kind, query_boxes=forward.boxes,
                        threshold=forward.threshold, candidates=forward.candidates,
                        returned=forward.returned, stored=forward.stored,
                        top_k=forward.top_k)  # fmt: skip
    n = len(rows)
    part = {"element_id": [None] * n, "category": forward.names, "category_id": rows.column + 1,
            "query": rows.query, "box": np.rint(forward.returned.boxes).astype(np.int64),
            "parent_id": [None] * n, "discarded": rows.reason}  # fmt: skip
    logits = None if forward.logits is None else forward.logits[rows.query]
    return mapped([rows.probs], [logits], list(range(n)), [part], kind)


def mapped(probs: list[Any], logits: list[Any], keys: list[Any], parts: list[dict[str, Any]],
            kind: str) -> MappedRows:  # fmt: skip
    box = np.concatenate([p.pop("box") for p in parts]) if parts else np.zeros((0, 4), np.int64)
    columns: dict[str, Any] = {name: [v for p in parts for v in p[name]] for name in parts[0]}
    columns.update(dict(zip(("ulx", "uly", "lrx", "lry"), box.T.tolist(), strict=True)))
    columns["activation"] = kind
    assert set(columns) == set(ELEMENT_COLUMNS)
    kept = None if logits[0] is None else np.ascontiguousarray(np.concatenate(logits), np.float32)
    return MappedRows(np.concatenate(probs), keys, columns, kept)
