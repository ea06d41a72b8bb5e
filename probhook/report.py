"""The report page of a run: one self-contained HTML file (styles inline, charts as inline SVG, no
script, nothing fetched) answering, for each head, how accurate it is without labels, whether the
documents drifted from a reference run, and which rows a person should check.

``probhook report RUN [--reference REF] [--labels LABELS.csv] -o report.html`` writes it (see
[`probhook.cli_report`][probhook.cli_report]); [`render`][render] builds it from
[`gather`][probhook.report_data.gather]'s heads.
"""

from __future__ import annotations

import os
import re
from html import escape
from typing import Any

import numpy as np

from probhook.report_data import HeadReport
from probhook.review import NONE
from probhook.svg import REFERENCE_COLOR, RUN_COLOR, bar_chart, histogram_chart, interval_chart
from probhook.two_sample import FINE_BINS

HIST_BINS = 20
"""Bars of a confidence histogram."""
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1440px;color:#222;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px}
h2{font-size:18px;border-bottom:2px solid #4c78a8;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:12px}
table{border-collapse:collapse;margin:6px 0}
td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}
th{background:#f4f6f8}td.t,th.t{text-align:left}
.note{background:#fff8e1;padding:6px 10px;border-left:4px solid #f5b800}
.ok{color:#1b7a33}.shift{color:#b3261e;font-weight:600}
.chart .ct{font-weight:600;font-size:13px}.chart .cl{font-size:11px;fill:#333}
.chart .grid{stroke:#e4e4e4}.big{font-size:20px;font-weight:600}
"""
ALPHA = 0.05
"""A p-value below this is reported as a shift."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _p(value: float) -> str:
    cls = "shift" if value < ALPHA else "ok"
    return f'<span class="{cls}">{value:.3g}</span>'


def _cell(content: str, tag: str) -> str:
    """A table cell, left-aligned unless it holds a number."""
    text = re.sub(r"<[^>]+>", "", content)
    number = re.match(r"^(-?[\d.]+|&ndash;)", text) is not None
    return f"<{tag}>{content}</{tag}>" if number else f'<{tag} class="t">{content}</{tag}>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(_cell(escape(h), "th") for h in header[:1]) + "".join(
        f"<th>{escape(h)}</th>" for h in header[1:]
    )
    body = "".join("<tr>" + "".join(_cell(c, "td") for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _coarse(hist: Any, lo: float) -> list[float]:
    """Shares of a fine confidence histogram in [`HIST_BINS`][HIST_BINS] bins over ``lo..1``."""
    starts = np.round(np.linspace(lo, 1.0, HIST_BINS + 1)[:-1] * FINE_BINS).astype(np.int64)
    counts = np.add.reduceat(np.asarray(hist), starts)
    counts[0] += int(np.asarray(hist)[: starts[0]].sum())
    total = max(int(counts.sum()), 1)
    return [float(c) / total for c in counts]


def _charts(h: HeadReport) -> str:
    labels = list(h.labels)
    run = h.stats.class_counts / max(h.stats.n, 1)
    series = [("this run", run.tolist(), RUN_COLOR)]
    if h.reference is not None and h.reference.n:
        series.append(
            ("reference", (h.reference.class_counts / h.reference.n).tolist(), REFERENCE_COLOR)
        )
    charts = [bar_chart(labels, series, title="Predicted class shares")]
    lo = np.floor(20.0 / max(len(labels), 1)) / 20.0 if labels else 0.0
    hist = [("this run", _coarse(h.stats.histogram("confidence"), lo), RUN_COLOR)]
    if h.reference is not None and h.reference.n:
        hist.append(
            ("reference", _coarse(h.reference.histogram("confidence"), lo), REFERENCE_COLOR)
        )
    rule = h.rule
    threshold = None
    if rule is not None and isinstance(rule.min_confidence, float) and rule.min_confidence != NONE:
        threshold = rule.min_confidence
    charts.append(
        histogram_chart(
            np.linspace(lo, 1.0, HIST_BINS + 1).tolist(),
            hist,
            title="Top probability (confidence)",
            threshold=threshold,
        )
    )
    est = h.estimate
    items = [("estimated", est.accuracy, est.lower, est.upper, RUN_COLOR)]
    if h.drift is not None:
        ref = h.drift.reference
        items.append(("reference est.", ref.accuracy, ref.lower, ref.upper, REFERENCE_COLOR))
    if h.measured is not None and h.labelled is not None:
        items.append(("measured", h.measured, h.measured, h.measured, "#54a24b"))
    charts.append(interval_chart(items, title="Accuracy"))
    return f'<div class="charts">{"".join(charts)}</div>'


def _accuracy(h: HeadReport) -> str:
    est = h.estimate
    out = [
        f'<p><span class="big">{est.accuracy:.1%}</span> estimated accuracy without labels '
        f"({est.level:.0%} interval {est.lower:.1%} &ndash; {est.upper:.1%}; the mean top "
        f"probability of {est.n} rows; right on average if the model is calibrated).</p>"
    ]
    if h.measured is not None and h.labelled is not None and h.labelled_estimate is not None:
        le = h.labelled_estimate
        out.append(
            f"<p>Measured on the {le.n} labelled rows: <b>{h.measured:.1%}</b> (the "
            f"estimate on the same rows: {le.accuracy:.1%}, {le.lower:.1%} &ndash; "
            f"{le.upper:.1%}).</p>"
        )
    ref = h.reference.class_counts / max(h.reference.n, 1) if h.reference is not None else None
    rows = []
    for k, c in enumerate(est.per_class):
        share = c.predicted / max(est.n, 1)
        rows.append(
            [
                escape(c.label),
                f"{c.predicted}",
                f"{share:.1%}",
                f"{ref[k]:.1%}" if ref is not None else "&ndash;",
                f"{_fmt(c.precision)} ({_fmt(c.precision_lower)}&ndash;{_fmt(c.precision_upper)})",
                _fmt(c.recall),
                _fmt(c.f1),
            ]
        )
    out.append(
        _table(
            [
                "class",
                "predicted rows",
                "share",
                "reference share",
                "est. precision (interval)",
                "est. recall",
                "est. F1",
            ],
            rows,
        )
    )
    return "".join(out)


def _drift(h: HeadReport) -> str:
    d = h.drift
    if d is None:
        return (
            "<p class='muted'>No reference run given (--reference).</p>"
            if h.reference is None
            else ""
        )
    c, conf, ent = d.class_shares, d.confidence, d.entropy
    how = (
        "exact on the values"
        if conf.ks.exact
        else f"from the grid: between {conf.ks.statistic:.4f} and {conf.ks.statistic_upper:.4f}"
    )
    rows = [
        [
            "estimated accuracy",
            f"{d.reference.accuracy:.3f}",
            f"{d.current.accuracy:.3f}",
            "",
            "",
            "",
        ],
        ["class shares", "", "", "chi-square", f"{c.statistic:.2f} (dof {c.dof})", _p(c.pvalue)],
        [
            "top probability",
            f"mean {conf.reference_mean:.3f}",
            f"mean {conf.current_mean:.3f}",
            "Kolmogorov-Smirnov",
            f"{conf.ks.statistic:.4f}",
            _p(conf.ks.pvalue),
        ],
        ["top probability", "", "", "PSI (10 reference deciles)", f"{conf.psi.psi:.4f}", ""],
        [
            "normalised entropy",
            f"mean {ent.reference_mean:.3f}",
            f"mean {ent.current_mean:.3f}",
            "Kolmogorov-Smirnov",
            f"{ent.ks.statistic:.4f}",
            _p(ent.ks.pvalue),
        ],
        ["normalised entropy", "", "", "PSI (10 reference deciles)", f"{ent.psi.psi:.4f}", ""],
    ]
    for k in d.per_class:
        if k.confidence is not None:
            rows.append(
                [
                    f"top probability of {escape(k.label)}",
                    f"mean {k.confidence.reference_mean:.3f}",
                    f"mean {k.confidence.current_mean:.3f}",
                    "Kolmogorov-Smirnov",
                    f"{k.confidence.ks.statistic:.4f}",
                    _p(k.confidence.ks.pvalue),
                ]
            )
    return (
        f"<p class='muted'>Against {escape(str(h.reference_origin))} "
        f"({d.reference.n} rows). KS {how}. Red p-values are below {ALPHA}.</p>"
        + _table(["measure", "reference", "this run", "test", "statistic", "p-value"], rows)
    )


def _review(h: HeadReport) -> str:
    out = []
    if h.rule is not None:
        r = h.rule
        guarantee = (
            f"wrong at most {r.max_error:.1%} of the time with probability at least "
            f"{1 - r.delta:.0%}"
        )
        if r.min_confidence == NONE:
            out.append(
                f"<p>No confidence threshold can be certified from the {r.n} labelled rows "
                f"so that the accepted {h.kind} are {guarantee}: review every row, or label "
                "more rows (or allow more error with --max-error).</p>"
            )
        else:
            out.append(
                f"<p>Review {h.kind} whose top probability is below "
                f"<b>{r.min_confidence:.4f}</b>: the others are {guarantee} (from {r.n} "
                f"labelled rows: {r.coverage:.1%} of them accepted, {r.error:.2%} of those "
                f"wrong, Clopper-Pearson bound {r.error_bound:.4f}).</p>"
            )
        if h.to_review is not None:
            lo, hi = h.to_review
            total = h.stats.n + h.stats.excluded
            count = f"{lo}" if lo == hi else f"{lo} &ndash; {hi}"
            out.append(f"<p><b>{count}</b> of the run's {total} {h.kind} go to review.</p>")
    shown = [
        c
        for c in ("file_name", "page_number", "word", "category_name", "key")
        if h.queue and c in h.queue[0]
    ]
    rows = [
        [*(_fmt(q[c]) for c in shown), _fmt(q["predicted"]), _fmt(q["confidence"])] for q in h.queue
    ]
    out.append(
        f"<p class='muted'>The {len(rows)} least confident {h.kind} (rows with NaN or "
        "inf probabilities first):</p>"
    )
    out.append(_table([*shown, "predicted", "confidence"], rows))
    return "".join(out)


def _head(h: HeadReport) -> str:
    facts = f"{h.stats.n} {h.kind}"
    if h.stats.excluded:
        facts += (
            f"; <span class='shift'>{h.stats.excluded} rows with NaN or inf probabilities "
            "excluded</span> (always sent to review)"
        )
    parts = [
        f"<section><h2>{escape(h.name)}</h2>",
        f"<p class='muted'>{escape(h.origin)}: {facts}; classes {escape(', '.join(h.labels))}</p>",
    ]
    parts += [f"<p class='note'>{escape(note)}</p>" for note in h.notes]
    if h.stats.n == 0:
        parts.append("<p>No rows with finite probabilities: nothing to estimate.</p></section>")
        return "".join(parts)
    parts += [
        _charts(h),
        "<h3>How accurate, without labels</h3>",
        _accuracy(h),
        "<h3>Did the documents drift?</h3>",
        _drift(h),
        "<h3>Which rows to check</h3>",
        _review(h),
        "</section>",
    ]
    return "".join(parts)


def render(run: str | os.PathLike[str], heads: list[HeadReport]) -> str:
    """The page for ``heads`` of ``run``."""
    from probhook import __version__

    body = "".join(_head(h) for h in heads)
    title = f"probhook report: {os.fspath(run)}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        f"<p class='muted'>{len(heads)} head(s); probhook {__version__}</p>{body}"
        "</body></html>\n"
    )
