"""``probhook report RUN [--reference REF] [--labels LABELS.csv] -o report.html``: the report page
of a run ([`probhook.report`][probhook.report]).

RUN is what ``probhook run`` or a capture's sink wrote: a ``.parquet`` / ``.arrows`` file (and the
``RUN.<head>.parquet`` files of further heads beside it), or the folder ``--engine ray`` wrote.
Exit status: 0 the page was written; 1 the run holds no rows; 2 a usage error (a path, the labels
file, a reference of another classifier), with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

DESCRIPTION = """\
Write one self-contained HTML page about a run: class shares, confidence, estimated accuracy
with its interval, drift against a reference run, the review rule and the least confident rows.

examples:
  probhook report probhook-results.parquet -o report.html
  probhook report this-week/ --reference last-month.parquet --labels checked.csv -o week.html

The labels file is CSV with a header: a 'label' column and 'key' (the row's key), 'image_id', or
'file_name' and 'page_number'; optionally 'head'. Labelled rows give the measured accuracy and a
review threshold: the rows above it are wrong at most --max-error of the time, with probability
at least 1 - --delta.
"""


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``report`` to the command line's subcommands."""
    from probhook.report_data import QUEUE_ROWS

    p = sub.add_parser(
        "report",
        help="an HTML page about a run: accuracy, drift, review",
        description=DESCRIPTION,
        formatter_class=formatter,
    )
    p.add_argument("run", type=Path, help="the run: a .parquet/.arrows file or a folder of them")
    p.add_argument("-o", "--out", type=Path, default=Path("report.html"), help="the page (.html)")
    p.add_argument("--reference", type=Path, help="an earlier run to compare against")
    p.add_argument("--labels", type=Path, help="CSV of true classes of some rows")
    p.add_argument(
        "--max-error",
        type=float,
        default=0.02,
        help="error rate allowed among the rows the review rule accepts",
    )
    p.add_argument(
        "--delta",
        type=float,
        default=0.05,
        help="chance allowed that the rule's error exceeds --max-error",
    )
    p.add_argument("--queue", type=int, default=QUEUE_ROWS, help="least confident rows listed")


class UsageError(Exception):
    """Something on the command line is wrong; nothing is read or written."""


def _check(args: argparse.Namespace) -> None:
    from probhook._extras import MissingExtraError, require_extra

    try:
        require_extra("decisions", "probhook report")
    except MissingExtraError as error:
        raise UsageError(str(error)) from None
    from probhook.arrow import stream_path

    for name, path in (("RUN", args.run), ("--reference", args.reference)):
        if path is not None and not path.exists() and not stream_path(path).exists():
            raise UsageError(f"{name}: no such file or folder: {path}")
    if args.labels is not None and not args.labels.is_file():
        raise UsageError(f"--labels: no such file: {args.labels}")
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {args.out}: the report is an HTML file: name it report.html")
    if args.out.is_dir() or not args.out.resolve().parent.is_dir():
        raise UsageError(f"-o {args.out}: not a file in an existing folder")
    for name, value in (("--max-error", args.max_error), ("--delta", args.delta)):
        if not 0 < value < 1:
            raise UsageError(f"{name} must lie between 0 and 1, got {value}")
    if args.queue < 0:
        raise UsageError(f"--queue must be at least 0, got {args.queue}")


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``probhook report``; returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        _check(args)
        from probhook.labels_file import LabelsError, read_labels

        labels = read_labels(args.labels) if args.labels is not None else None
    except (UsageError, ValueError) as error:
        print(f"probhook: error: {error}", file=err)
        return 2
    from probhook.report import render
    from probhook.report_data import gather
    from probhook.scan import EmptyRunError

    try:
        heads = gather(
            args.run,
            args.reference,
            labels,
            max_error=args.max_error,
            delta=args.delta,
            queue_rows=args.queue,
        )
    except EmptyRunError as error:
        print(f"probhook: error: {error}", file=err)
        return 1
    except (LabelsError, ValueError) as error:  # labels, or a reference of another classifier
        print(f"probhook: error: {error}", file=err)
        return 2
    args.out.write_text(render(args.run, heads), encoding="utf-8")
    for h in heads:
        est = h.estimate
        line = f"{h.name}: {h.stats.n} {h.kind}"
        if h.stats.excluded:
            line += f", {h.stats.excluded} with NaN or inf probabilities excluded"
        if h.stats.n:
            line += f"; estimated accuracy {est.accuracy:.3f} ({est.lower:.3f}-{est.upper:.3f})"
        if h.measured is not None:
            line += f"; measured {h.measured:.3f}"
        if h.drift is not None:
            line += (
                f"; class shares p = {h.drift.class_shares.pvalue:.3g}, confidence KS p = "
                f"{h.drift.confidence.ks.pvalue:.3g}"
            )
        if h.rule is not None and h.to_review is not None:
            line += f"; {h.to_review[1]} to review"
        print(line, file=out)
    print(f"report: {args.out}", file=out)
    return 0
