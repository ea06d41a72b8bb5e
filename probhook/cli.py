"""``probhook run`` / ``probhook demo``: classify document pages with deepdoctection and keep
every page's full distribution (options, checks, the run loop; what is printed and written:
``cli_output``).

Exit status: 0 pages were classified (inputs that could not be read are listed on stderr);
1 nothing was classified (no readable input); 2 a usage error (an option, a path, the model
folder), found before any document is read; 128 + N stopped by signal N (130 Ctrl-C,
143 SIGTERM) after finishing the current page, with the rows file complete.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from probhook.cli_output import (
    JsonWriter,
    PageResult,
    Progress,
    TableWriter,
    Totals,
    finish_rows_file,
    print_lines,
    save_plot,
    summary_lines,
    write_failed,
)
from probhook.cli_signals import StopRequest, ignored
from probhook.integrations.deepdoctection.analyzer import (
    UsageError,
    build_analyzer,
    ocr_available,
    quiet_libraries,
    read_model_dir,
    reason,
)
from probhook.sink import SinkError

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
OUT_SUFFIXES = (".parquet", ".arrows")
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")
DESCRIPTION = """\
Classify document pages with deepdoctection and keep every page's full probability distribution.

examples:
  probhook demo                      the shipped toy model on the shipped sample PDFs
  probhook run scans/ --model my-layoutlm/ --out results.parquet --min-confidence 0.7

PDF text comes from the PDF's text layer; images need an OCR engine (tesseract). One line per
page on stdout (a table, or JSON with --format json), every row in the --out file.

exit status: 0 pages classified (unreadable inputs are listed on stderr), 1 nothing classified,
2 usage error (nothing is read), 130/143 stopped by Ctrl-C/SIGTERM (the --out file is complete),
141 stdout's reader left (| head): stopped after the current page, the --out file complete
"""


@dataclass
class Inputs:
    """The documents to classify and the inputs skipped, with the reason."""

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


def check_output(option: str, path: Path, suffixes: tuple[str, ...], example: str) -> None:
    """``path`` can be written as a new file with one of ``suffixes``: checked (creating its
    folder) before anything is classified, so a bad path costs nothing."""
    if path.is_dir() or str(path).endswith(("/", os.sep)):
        raise UsageError(f"{option} {path} is a folder: give a file name such as {path / example}")
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"{option} {path}: cannot write there ({reason})") from None


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path and the packages the run needs, before any document is read."""
    from probhook._extras import MissingExtraError, require_extra

    try:  # the deepdoctection extra brings pyarrow too
        require_extra("deepdoctection", f"probhook {args.command}")
        require_extra("parquet", "writing --out")
        if args.plot is not None:
            require_extra("notebook", "--plot")
    except MissingExtraError as error:
        raise UsageError(str(error)) from None
    if getattr(args, "engine", "local") == "ray":  # Ray writes a folder of Parquet files
        if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
            raise UsageError(f"--out {args.out}: --engine ray writes a new or empty folder")
    else:
        check_output("--out", args.out, OUT_SUFFIXES, "probhook-results.parquet")
    if args.plot is not None:
        check_output("--plot", args.plot, PLOT_SUFFIXES, "confidence.png")
        if args.plot.resolve() == args.out.resolve():
            raise UsageError(f"--plot and --out are the same file ({args.out})")


def count_pages(documents: list[Path]) -> int:
    """Pages to classify, for progress: a PDF's page count (0 if unreadable), 1 per image."""
    from pypdf import PdfReader

    total = 0
    for document in documents:
        if document.suffix.lower() not in PDF_SUFFIXES:
            total += 1
            continue
        try:
            total += len(PdfReader(document).pages)
        except Exception:  # encrypted or broken: reported when deepdoctection reads it
            continue
    return total


def classify(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the pipeline over the inputs, printing a line per page as it is classified, then a
    summary; return the exit status. Memory stays at the capture's: pages are not kept."""
    out, err = out or sys.stdout, err or sys.stderr
    check_outputs(args)
    if args.demo_model_note:
        print("note: no --model given: using probhook's toy demo model (letter, invoice, form, "
              "memo; trained on synthetic pages); give --model for your own classifier",
              file=err)  # fmt: skip
    ocr = ocr_available()
    inputs = collect_inputs(args.docs, ocr)
    wrapper, labels = read_model_dir(args.model)
    for path, why in inputs.skipped:
        print(f"warning: skipped {path}: {why}", file=err)
    if not inputs.documents:
        print("error: nothing to classify (no PDF, and no image with an OCR engine)", file=err)
        return 1
    if getattr(args, "engine", "local") == "ray":
        return _classify_on_ray(args, inputs, out)
    stop = StopRequest()
    with stop.installed():  # from here on, SIGTERM / Ctrl-C end the run cleanly
        return _run(args, inputs, wrapper, labels, ocr, stop, out, err)


def _run(args: argparse.Namespace, inputs: Inputs, wrapper: str, labels: list[str], ocr: bool,
         stop: StopRequest, out: TextIO, err: TextIO) -> int:  # fmt: skip
    quiet_libraries()
    # the model is a local folder: never ask a hub (deepdoctection keeps its usual cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    analyzer = build_analyzer(args.model, wrapper, labels, ocr)
    from probhook import capture_probs

    names = [d.name for d in inputs.documents]
    writer = JsonWriter() if args.format == "json" else TableWriter(names, labels, args.top_k)
    pages = 0 if args.quiet else count_pages(inputs.documents)  # only progress needs it
    progress = Progress(pages, len(inputs.documents), err, enabled=not args.quiet)
    run = Run(args, analyzer, capture_probs(analyzer, sink=args.out), writer, progress, inputs,
              out, err, stop=stop)  # fmt: skip
    print_lines(writer.header(), out)
    failed: SinkError | None = None  # the rows file could not be written (a full disk)
    run.cap.start()
    try:
        for document in inputs.documents:
            if stop.signal is not None:
                break
            run.document(document)
            progress.document_done()
    except SinkError as error:
        failed = error
    finally:
        # a second signal here must not leave a torn file: finish closing first
        with ignored():
            progress.close()
            try:
                run.cap.close()
            except SinkError as error:
                failed = failed or error
            written = None if failed else finish_rows_file(args.out, len(run.cap))
    if failed is not None:
        return write_failed(args.out, failed, err)
    gc.collect()  # close the PDF handles while pypdfium2 is still loaded (no warnings at exit)
    report = err if args.format == "json" or run.out is not out else out  # stdout: JSON lines
    print_lines(summary_lines(run.totals, len(inputs.skipped), written, run.stop.name), report)
    if args.plot and run.totals.classified:
        save_plot(run.cap, args.plot)
        print(f"plot: {args.plot}", file=report)
    if stop.signal is not None:
        return 128 + stop.signal
    return 0 if run.totals.classified else 1


@dataclass
class Run:
    """One run's state: the analyzer, its capture, what is printed, the totals."""

    args: argparse.Namespace
    analyzer: Any
    cap: Any
    writer: TableWriter | JsonWriter
    progress: Progress
    inputs: Inputs
    out: TextIO
    err: TextIO
    totals: Totals = field(default_factory=Totals)
    stop: StopRequest = field(default_factory=StopRequest)

    def document(self, document: Path) -> None:
        """Classify every page of one document, a line each; a broken document is skipped."""
        try:
            flow = self.analyzer.analyze(path=os.fspath(document))
            flow.reset_state()
            for page in flow:
                for view in self.cap.heads.values():  # the row is written now: a full disk
                    view.buffer and view.buffer.flush()  # ends the run (SinkError)
                newest = self.cap.latest()  # the page's row, if this page had a forward
                dist = newest if newest is not None and newest.key == page.image_id else None
                result = PageResult(document, int(page.page_number), page.image_id, dist,
                                    self.args.min_confidence, self.args.min_margin)  # fmt: skip
                self.totals.add(result)
                try:
                    self.progress.write(self.writer.line(result), self.out)
                except BrokenPipeError:  # stdout's reader left (``| head -1``): end as SIGPIPE
                    self.out = _devnull(self.out)  # does, with the rows file closed complete
                    self.stop.signal = signal.SIGPIPE
                self.progress.page_done()
                if self.stop.signal is not None:
                    return
        except SinkError:
            raise  # the rows file, not the document: that ends the run
        except Exception as error:  # a broken document must not end the run
            self.inputs.skipped.append((document, reason(error)))
            self.progress.write(f"warning: skipped {document}: {reason(error)}", self.err)


def _devnull(out: TextIO) -> TextIO:
    """Where output goes once the reader of ``out`` left: nowhere (stdout's descriptor too,
    so that Python's flush at exit does not fail again)."""
    if out is sys.stdout:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return open(os.devnull, "w")  # lives as long as the run


def _classify_on_ray(args: argparse.Namespace, inputs: Inputs, out: TextIO) -> int:
    """``--engine ray``: the documents on Ray workers, every row in the folder ``--out``."""
    import probhook
    from probhook.integrations.ray import run

    summary = run(
        inputs.documents,
        model_dir=args.model,
        out=args.out,
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        quiet=args.quiet,
    )
    print(summary, file=out)
    if args.plot and summary.pages:
        save_plot(probhook.load(args.out), args.plot)
        print(f"plot: {args.plot}", file=out)
    return 0 if summary.pages else 1


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (those that are values, not None or False), line breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``probhook`` argument parser."""
    from probhook import __version__

    parser = argparse.ArgumentParser(prog="probhook", description=DESCRIPTION,
                                     formatter_class=_HelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"probhook {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="classify PDFs (and images, with OCR) and keep every "
                         "distribution", description=DESCRIPTION,
                         formatter_class=_HelpFormatter)  # fmt: skip
    run.add_argument("docs", nargs="*", type=Path,
                     help="PDF/image files or folders (none, and no --model: the demo "
                     "PDFs)")  # fmt: skip
    run.add_argument("--model", type=Path, help="Hugging Face *ForSequenceClassification folder "
                     "(none: probhook's toy demo model)")  # fmt: skip
    demo = sub.add_parser("demo", help="the shipped toy model on the shipped sample PDFs",
                          formatter_class=_HelpFormatter)  # fmt: skip
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process; ray: Ray workers, --out a folder")  # fmt: skip
    run.add_argument("--address", help="--engine ray: the Ray cluster to join "
                     "(none: start a local Ray instance)")  # fmt: skip
    run.add_argument("--workers", type=_positive, default=1, help="--engine ray: workers")
    run.add_argument("--gpus-per-worker", type=_non_negative, default=0.0,
                     help="--engine ray: GPUs each worker asks for")  # fmt: skip
    for p in (run, demo):
        p.add_argument("--out", type=Path, default=Path("probhook-results.parquet"),
                       help="file for every row: .parquet, or .arrows (Arrow stream)")  # fmt: skip
        p.add_argument("--format", choices=("table", "json"), default="table",
                       help="stdout: a table, or one JSON object per page")  # fmt: skip
        p.add_argument("--top-k", type=_positive, default=3, help="labels shown per page")
        p.add_argument("--min-confidence", type=_fraction, default=0.9,
                       help="flag pages whose top probability is below this")  # fmt: skip
        p.add_argument("--min-margin", type=_fraction, default=None,
                       help="flag pages whose top-1 minus top-2 is below this")  # fmt: skip
        p.add_argument("--plot", type=Path, default=None,
                       help="save a confidence histogram (.png, .svg, .pdf, .jpg)")  # fmt: skip
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``probhook`` entry point; returns the exit status."""
    from probhook import demo

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        args.docs, args.model = [], None
    args.demo_model_note = args.command == "run" and args.model is None
    if not args.docs and args.model is None:
        args.docs = [demo.SAMPLES_DIR]
    elif not args.docs:
        parser.error("give the documents to classify (files or folders)")
    if args.model is None:
        args.model = demo.MODEL_DIR
    if getattr(args, "engine", "local") != "ray" and (
        getattr(args, "address", None)
        or getattr(args, "workers", 1) != 1
        or getattr(args, "gpus_per_worker", 0)
    ):
        parser.error("--address, --workers and --gpus-per-worker go with --engine ray")
    try:
        return classify(args)
    except UsageError as error:
        print(f"probhook: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: the rows file was closed first
        print("probhook: stopped", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
