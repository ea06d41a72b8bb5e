"""HTML representations for Jupyter: a capture shows itself as a table with inline bars.

>>> import numpy as np
>>> from probhook import Distribution
>>> html = Distribution(np.array([0.2, 0.8]), ("letter", "invoice"))._repr_html_()
>>> "invoice" in html and "80.0%" in html
True
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from probhook.block import RowSource
    from probhook.distribution import Distribution


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
    bars = "".join(_bar(label, p) for label, p in dist.top_k(k))
    key = f"<b>{escape(str(dist.key))}</b><br>" if dist.key is not None else ""
    return f"<div>{key}{bars}</div>"


def heads_html(heads: Iterable[RowSource], latest: int = 10) -> str:
    """Per head: rows kept, capacity, evicted, memory, labels, then the latest rows with top-3
    bars (only those rows are read, however many are kept)."""
    parts = []
    for head in heads:
        if head.capacity is None:  # no row yet: no buffer, nothing to size
            parts.append(f"<div><b>{escape(head.name)}</b>: no rows captured</div>")
            continue
        summary = (
            f"<b>{escape(head.name)}</b>: {len(head)} rows kept of capacity {head.capacity}, "
            f"{head.evicted} evicted, {head.nbytes / 2**20:.2f} MiB, labels: "
            f"{escape(', '.join(head.labels))}"
        )
        rows = []
        for dist in head.rows(last=latest):
            bars = "".join(_bar(label, p) for label, p in dist.top_k(3))
            rows.append(
                f"<tr><td>{dist.seq}</td><td>{escape(str(dist.key))}</td><td>{bars}</td></tr>"
            )
        table = (
            "<table><tr><th>seq</th><th>key</th><th>top-3</th></tr>" + "".join(rows) + "</table>"
            if rows
            else ""
        )
        parts.append(f"<div>{summary}{table}</div>")
    return "".join(parts)
