"""Small charts as inline SVG for the report page: grouped bars, histograms, intervals. Plain text,
no plotting library, nothing fetched: a browser draws them from the page itself.

Examples:
    >>> svg = bar_chart(["letter", "invoice"], [("run", [0.6, 0.4], RUN_COLOR)], title="shares")
    >>> svg.startswith("<svg") and svg.count("<rect") >= 2
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

RUN_COLOR = "#4c78a8"
REFERENCE_COLOR = "#f58518"
THRESHOLD_COLOR = "#d62728"
Series = tuple[str, Sequence[float], str]
"""``(name, values, colour)``."""

W, H = 460, 240
CLIP = 4.0
"""A histogram's axis stops at this many times its second highest bin (see histogram_chart)."""
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 28, 46


def _open(title: str, height: int = H) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
        f'viewBox="0 0 {W} {height}" role="img" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{W / 2}" y="16" text-anchor="middle" class="ct">{escape(title)}</text>',
    ]


def _legend(series: Sequence[Series], y: float) -> list[str]:
    out, x = [], LEFT
    for name, _, colour in series:
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14}" y="{y}" class="cl">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return out


def _y_axis(top: float, fmt: str) -> list[str]:
    out, plot_h = [], H - TOP - BOTTOM
    for i in range(5):
        y = H - BOTTOM - plot_h * i / 4
        label = fmt.format(top * i / 4)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" class="cl">{label}</text>'
        )
    return out


def bar_chart(
    categories: Sequence[str], series: Sequence[Series], *, title: str, percent: bool = True
) -> str:
    """Grouped vertical bars: one group per category, one bar per series."""
    top = max([max(v, default=0.0) for _, v, _ in series] + [1e-9])
    top = min(1.0, top * 1.15) if percent else top * 1.15
    out = _open(title) + _y_axis(top, "{:.0%}" if percent else "{:.3g}")
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    group = plot_w / max(len(categories), 1)
    bar = group * 0.8 / max(len(series), 1)
    for i, category in enumerate(categories):
        x0 = LEFT + i * group + group * 0.1
        for j, (name, values, colour) in enumerate(series):
            h = plot_h * values[i] / top
            out.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{H - BOTTOM - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} '
                f"{escape(category)}: {values[i]:.3g}</title></rect>"
            )
        out.append(
            f'<text x="{x0 + group * 0.4:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle" '
            f'class="cl">{escape(category[:14])}</text>'
        )
    out += _legend(series, H - 8)
    return "\n".join([*out, "</svg>"])


def histogram_chart(
    edges: Sequence[float], series: Sequence[Series], *, title: str, threshold: float | None = None
) -> str:
    """Shares per bin (``len(edges) - 1`` bins): the first series as bars, the others as
    outlines over them; ``threshold`` as a dashed line. When one bin towers over the rest (most
    rows sure, in the last bin), the axis is cut at [`CLIP`][CLIP] times the next highest bin so
    that the rest stays visible, and the cut bars say their share."""
    lo, hi = edges[0], edges[-1]
    per_bin = sorted((max(b) for b in zip(*(vs for _, vs, _ in series), strict=True)), reverse=True)
    highest, second = [*per_bin, 0.0, 0.0][:2]
    top = max(highest, 1e-9) * 1.1
    if second > 0 and highest > CLIP * second:
        top = CLIP * second
    out = _open(title) + _y_axis(top, "{:.0%}" if top >= 0.05 else "{:.1%}")
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + plot_w * (v - lo) / (hi - lo)

    def y(v: float) -> float:
        return float(H - BOTTOM - plot_h * min(v, top) / top)

    bins = list(zip(edges[:-1], edges[1:], series[0][1], strict=True)) if series else []
    cut = [(a, b, v) for a, b, v in bins if v > top]  # fmt: skip

    for k, (name, values, colour) in enumerate(series):
        if k == 0:
            for a, b, v in zip(edges[:-1], edges[1:], values, strict=True):
                out.append(
                    f'<rect x="{x(a):.1f}" y="{y(v):.1f}" width="{max(x(b) - x(a) - 1, 1):.1f}" '
                    f'height="{H - BOTTOM - y(v):.1f}" fill="{colour}"/>'
                )
            continue
        points = [f"{x(edges[0]):.1f},{y(0):.1f}"]
        for a, b, v in zip(edges[:-1], edges[1:], values, strict=True):
            points += [f"{x(a):.1f},{y(v):.1f}", f"{x(b):.1f},{y(v):.1f}"]
        out.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="2.5"><title>{escape(name)}</title></polyline>'
        )
    for a, b, v in cut:
        out.append(
            f'<text x="{(x(a) + x(b)) / 2:.1f}" y="{TOP + 10}" text-anchor="end" '
            f'class="cl">{v:.0%} &#x2191;</text>'
        )
    for i in range(6):
        v = lo + (hi - lo) * i / 5
        out.append(
            f'<text x="{x(v):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle" '
            f'class="cl">{v:.2f}</text>'
        )
    if threshold is not None and lo <= threshold <= hi:
        at = round(x(threshold)) + 0.5  # on a pixel's centre: crisp, not blurred over two
        out.append(
            f'<line x1="{at}" x2="{at}" y1="{TOP}" y2="{H - BOTTOM}" stroke="{THRESHOLD_COLOR}" '
            f'stroke-width="3" stroke-dasharray="6 3"><title>review below {threshold:.4f}'
            "</title></line>"
        )
    out += _legend(series, H - 8)
    return "\n".join([*out, "</svg>"])


def interval_chart(items: Sequence[tuple[str, float, float, float, str]], *, title: str) -> str:
    """One line per ``(name, value, lower, upper, colour)``: a dot and its interval, on an axis
    zoomed to the intervals."""
    height = TOP + 30 * len(items) + 34
    lows = [lo for _, _, lo, _, _ in items] + [v for _, v, _, _, _ in items]
    highs = [hi for _, _, _, hi, _ in items] + [v for _, v, _, _, _ in items]
    lo, hi = max(0.0, min(lows) - 0.05), min(1.0, max(highs) + 0.05)
    hi = hi if hi > lo else lo + 0.1
    left = 120
    plot_w = W - left - RIGHT
    out = _open(title, height)

    def x(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    for i, (name, value, low, high, colour) in enumerate(items):
        y = TOP + 16 + 30 * i
        out.append(
            f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" class="cl">{escape(name)}</text>'
        )
        out.append(
            f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{y}" y2="{y}" stroke="{colour}" '
            f'stroke-width="4"/>'
        )
        out.append(
            f'<circle cx="{x(value):.1f}" cy="{y}" r="6" fill="{colour}"><title>'
            f"{escape(name)}: {value:.3f} ({low:.3f}-{high:.3f})</title></circle>"
        )
    axis_y = height - 22
    out.append(f'<line x1="{left}" x2="{W - RIGHT}" y1="{axis_y}" y2="{axis_y}" class="grid"/>')
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(
            f'<text x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle" class="cl">{v:.2f}</text>'
        )
    return "\n".join([*out, "</svg>"])
