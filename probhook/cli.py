"""``probhook``: classify document pages with deepdoctection and keep every distribution.

    probhook demo                                   # shipped model and sample PDFs
    probhook run scans/ --model my-layoutlm/ --out results.parquet --min-confidence 0.7

PDF text comes from deepdoctection's own PDF text extraction (pdfplumber); images need an OCR
engine (tesseract). Every page's distribution is captured with ``capture_probs`` and streamed to
``--out`` (Parquet); the table on stdout shows the top-k labels and flags uncertain pages. With a
token-classification model (``*ForTokenClassification``) every word's distribution is kept and
each page lists its least confident words.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from probhook.integrations.deepdoctection.analyzer import (
    UsageError,
    build_analyzer,
    build_word_analyzer,
    ocr_available,
    read_model_folder,
)
from probhook.integrations.deepdoctection.word_table import WordTable

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass
class Inputs:
    documents: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(paths: list[Path], ocr: bool) -> Inputs:
    """PDFs and (with OCR) images from files and folders; everything else is reported."""
    found = Inputs()
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or folder: {path}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            suffix = file.suffix.lower()
            if suffix in PDF_SUFFIXES or (suffix in IMAGE_SUFFIXES and ocr):
                found.documents.append(file)
            elif suffix in IMAGE_SUFFIXES:
                found.skipped.append((file, "image input needs an OCR engine: install tesseract"))
            else:
                found.skipped.append((file, f"not a PDF or image ({suffix or 'no suffix'})"))
    return found


def _quiet_libraries() -> None:
    """Keep stdout and stderr for probhook's table and warnings: libraries log at ERROR only."""
    os.environ.setdefault("LOG_LEVEL", "ERROR")  # deepdoctection reads it when first imported
    import torch  # noqa: F401  (torch resets its loggers' levels on import: import it first)

    names = ("dd_core", "deepdoctection", "pypdf", "pdfminer", "transformers", "timm", "torch")
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class Progress:
    """A one-line progress bar on stderr, only on a terminal."""

    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = enabled and stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label[:40]:<40}")
            self.stream.flush()

    def clear(self) -> None:
        """Wipe the bar so that a table line or warning prints cleanly; the next step redraws."""
        if self.enabled and self.done:
            self.stream.write("\r" + " " * 80 + "\r")

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def classify(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the pipeline over the inputs, printing a line per page as it is classified, then a
    summary; return the exit code. Memory stays at the capture's: pages are not kept."""
    out, err = out or sys.stdout, err or sys.stderr
    _quiet_libraries()
    # the model is a local folder: never ask a hub (deepdoctection keeps its usual cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ocr = ocr_available()
    inputs = collect_inputs(args.docs, ocr)
    folder = read_model_folder(args.model)
    for path, why in inputs.skipped:
        print(f"warning: skipped {path}: {why}", file=err)
    if not inputs.documents:
        print("error: nothing to classify (no PDF, and no image with an OCR engine)", file=err)
        return 1

    from probhook import capture_probs

    words = folder.task == "token"
    if words:
        analyzer = build_word_analyzer(folder, ocr)
    else:
        analyzer = build_analyzer(args.model, folder.wrapper, folder.labels, ocr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(inputs.documents), enabled=not args.quiet, stream=err)
    table: Any = (
        WordTable(out, shown=args.top_k, min_confidence=args.min_confidence,
                  min_margin=args.min_margin)
        if words
        else Table(args, [d.name for d in inputs.documents], folder.labels, out)
    )  # fmt: skip
    with capture_probs(analyzer, sink=args.out) as cap:
        for document in inputs.documents:
            try:
                flow = analyzer.analyze(path=os.fspath(document))
                flow.reset_state()
                for page in flow:
                    progress.clear()
                    table.add(page, cap.words(page) if words else _newest_row_of(cap, page))
            except Exception as error:  # a broken document must not end the run
                inputs.skipped.append((document, _reason(error)))
                progress.clear()
                print(f"warning: skipped {document}: {_reason(error)}", file=err)
            progress.step(document.name)
    progress.close()
    gc.collect()  # close the PDF handles while pypdfium2 is still loaded (no warnings at exit)
    if words:
        table.summary(len(inputs.skipped), args.out)
    else:
        table.summary(inputs, args.out)
    if args.plot:
        save_plot(cap, args.plot)
        print(f"plot: {args.plot}", file=out)
    return 0 if len(cap) else 1


def _newest_row_of(cap: Any, page: Any) -> Any:
    """The page's distribution: the newest row, if it is this page's (no forward, no row)."""
    newest = cap.latest()
    return newest if newest is not None and newest.key == page.image_id else None


def _reason(error: Exception) -> str:
    name = type(error).__name__
    if "Decrypt" in name or "encrypt" in str(error).lower():
        return "encrypted PDF (no password given)"
    return f"unreadable ({name}: {str(error)[:120]})"


class Table:
    """The per-page table, printed line by line, and the running totals for the summary."""

    def __init__(
        self, args: argparse.Namespace, names: list[str], labels: list[str], out: TextIO
    ) -> None:
        self.args, self.out = args, out
        self.width = max([len("document"), *map(len, names)])
        self.label_width = max([len("predicted"), *map(len, labels)])
        self.counts: Counter[str] = Counter()
        self.flagged, self.confidence_sum = 0, 0.0
        self.documents, self._document = 0, None
        header = (f"{'document':<{self.width}} {'page':>4}  {'predicted':<{self.label_width}} "
                  f"{'conf':>5} {'margin':>6}  top-{args.top_k}")  # fmt: skip
        print(header, file=out)
        print("-" * (len(header) + 12 * args.top_k), file=out)

    def add(self, page: Any, dist: Any) -> None:
        name = Path(page.location or page.file_name).name
        if page.document_id != self._document:  # documents arrive one after another
            self.documents, self._document = self.documents + 1, page.document_id
        if dist is None:
            print(f"{name:<{self.width}} {page.page_number:>4}  (no words: not classified)",
                  file=self.out)  # fmt: skip
            return
        top = dist.top_k(self.args.top_k)
        margin = float(top[0][1] - top[1][1]) if len(top) > 1 else 1.0
        flagged = self._flagged(dist.confidence, margin)
        self.counts[dist.predicted] += 1
        self.flagged += flagged
        self.confidence_sum += dist.confidence
        tops = "  ".join(f"{label} {p:.2f}" for label, p in top)
        print(f"{name:<{self.width}} {page.page_number:>4}  {dist.predicted:<{self.label_width}} "
              f"{dist.confidence:>5.2f} {margin:>6.2f}  {tops}{'  <- review' if flagged else ''}",
              file=self.out)  # fmt: skip

    def _flagged(self, confidence: float, margin: float) -> bool:
        low = self.args.min_confidence is not None and confidence < self.args.min_confidence
        return low or (self.args.min_margin is not None and margin < self.args.min_margin)

    def summary(self, inputs: Inputs, rows_file: Path) -> None:
        pages = sum(self.counts.values())
        mean = self.confidence_sum / pages if pages else float("nan")
        out = self.out
        print("", file=out)
        totals = f"{pages} pages classified in {self.documents} documents"
        print(f"{totals}; mean confidence {mean:.2f}; {self.flagged} flagged for review", file=out)
        counts = ", ".join(f"{label} {n}" for label, n in self.counts.most_common())
        print(f"predicted: {counts}", file=out)
        if inputs.skipped:
            print(f"skipped {len(inputs.skipped)} inputs (see warnings on stderr)", file=out)
        print(f"all rows: {rows_file}", file=out)


def save_plot(cap: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = cap.plot.confidence(bins=20)
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probhook", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run", help="classify PDFs (and images, with OCR) and keep every distribution"
    )
    run.add_argument(
        "docs", nargs="*", type=Path, help="PDF/image files or folders (default: demo samples)"
    )
    run.add_argument(
        "--model",
        type=Path,
        help="Hugging Face sequence- or token-classifier folder (default: demo model)",
    )
    demo = sub.add_parser("demo", help="run on the shipped sample PDFs with the shipped model")
    for p in (run, demo):
        p.add_argument(
            "--out",
            type=Path,
            default=Path("probhook-results.parquet"),
            help="Parquet file for every row",
        )
        p.add_argument(
            "--top-k",
            type=int,
            default=3,
            help="labels (words, for a token classifier) shown per page (default 3)",
        )
        p.add_argument("--min-confidence", type=float, default=0.9,
                       help="flag pages below this top probability (default 0.9)")  # fmt: skip
        p.add_argument(
            "--min-margin", type=float, default=None, help="flag pages below this top-1 minus top-2"
        )
        p.add_argument("--plot", type=Path, help="save a confidence histogram (PNG)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    from probhook import demo

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        args.docs, args.model = [], None
    if not args.docs and args.model is None:
        args.docs, args.model = [demo.SAMPLES_DIR], demo.MODEL_DIR
    elif not args.docs:
        parser.error("give the documents to classify (files or folders)")
    elif args.model is None:
        args.model = demo.MODEL_DIR
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    try:
        return classify(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
