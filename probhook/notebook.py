"""HTML representations for Jupyter: a capture shows itself as a table with inline bars.

Examples:
    >>> import numpy as np
    >>> from probhook import Distribution
    >>> html = Distribution(np.array([0.2, 0.8]), ("letter", "invoice"))._repr_html_()
    >>> "invoice" in html and "80.0%" in html
    True
"""

from __future__ import annotations

import functools
from html import escape
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable

    from probhook.block import RowSource
    from probhook.distribution import Distribution


REVIEW_CONFIDENCE = 0.9
"""The confidence below which the summary line counts a row as flagged for review."""


def _bar(label: str, p: float) -> str:
    width = max(0.0, min(1.0, p)) * 100
    return (
        f'<div style="display:flex;align-items:center;gap:4px;font-size:11px">'
        f'<span style="min-width:90px">{escape(label)}</span>'
        f'<span style="display:inline-block;width:{width:.1f}px;height:8px;'
        'background:#4c78a8"></span>'
        f"<span>{p:.1%}</span></div>"
    )


def distribution_html(dist: Distribution, k: int = 10) -> str:
    """One row as bars of its ``k`` most probable labels, under where it came from."""
    bars = "".join(_bar(label, p) for label, p in dist.top_k(k))
    where = dist.where
    return f"<div>{f'<b>{escape(where)}</b><br>' if where else ''}{bars}</div>"


def summary_line(head: RowSource, min_confidence: float = REVIEW_CONFIDENCE) -> str:
    """Rows, mean confidence and how many a person should look at, in one line."""
    n = len(head)
    if not n:
        return f"{escape(head.name)}: no rows yet"
    measures = getattr(head, "measures", None)  # detected elements: at their own class
    if measures is not None:
        confidence = measures().confidence
    else:
        probs = head.probs  # one copy of the kept rows
        # column by column: numpy reduces a short last axis slowly (~40 ms for 200,000 x 4)
        confidence = functools.reduce(np.maximum, probs.T) if probs.shape[1] else np.zeros(n)
    finite = np.isfinite(confidence)  # NaN anywhere in a row propagates through np.maximum
    flagged = int((~finite | (confidence < min_confidence)).sum())
    mean = float(confidence[finite].mean()) if finite.any() else float("nan")
    return (
        f"<b>{escape(head.name)}</b>: {n:,} rows, mean confidence {mean:.3f}, "
        f"{flagged:,} flagged (confidence &lt; {min_confidence:g})"
    )


def heads_html(heads: Iterable[RowSource], latest: int = 10) -> str:
    """Per head: a summary line (rows, mean confidence, flagged), then rows kept, capacity,
    evicted, memory and labels, then the latest rows with top-3 bars (only those rows are
    built, however many are kept)."""
    parts = []
    for head in heads:
        if head.capacity is None:  # no row yet: no buffer, nothing to size
            parts.append(f"<div><b>{escape(head.name)}</b>: no rows captured</div>")
            continue
        details = (
            f"{len(head)} rows kept of capacity {head.capacity}, {head.evicted} evicted, "
            f"{head.nbytes / 2**20:.2f} MiB, labels: {escape(', '.join(head.labels))}"
        )
        rows = []
        for dist in head.rows(last=latest):
            bars = "".join(_bar(label, p) for label, p in dist.top_k(3))
            rows.append(f"<tr><td>{dist.seq}</td><td>{escape(dist.where)}</td><td>{bars}</td></tr>")
        table = (
            "<table><tr><th>seq</th><th>row</th><th>top-3</th></tr>" + "".join(rows) + "</table>"
            if rows
            else ""
        )
        parts.append(f"<div>{summary_line(head)}<br><small>{details}</small>{table}</div>")
    return "".join(parts)
