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
import gc
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from probhook.cli_output import (
    JsonWriter,
    PageResult,
    Progress,
    TableWriter,
    Totals,
    devnull,
    finish_rows_file,
    print_lines,
    save_plot,
    summary_lines,
    write_failed,
)
from probhook.cli_paths import (
    Inputs,
    check_outputs,
    check_plot_is_no_input,
    collect_inputs,
    count_pages,
)
from probhook.cli_signals import StopRequest, ignored
from probhook.integrations.deepdoctection.analyzer import (
    NO_PAGES,
    ModelFolder,
    UsageError,
    analyzer_from_folder,
    ocr_available,
    quiet_libraries,
    read_model_folder,
    reason,
)
from probhook.integrations.deepdoctection.element_table import ElementReport
from probhook.integrations.deepdoctection.word_table import WordTable
from probhook.sink import SinkBusyError, SinkError

DESCRIPTION = """\
Classify document pages with deepdoctection and keep every page's full probability distribution.

examples:
  probhook demo                      the shipped toy model on the shipped sample PDFs
  probhook run scans/ --model my-layoutlm/ --out results.parquet --min-confidence 0.7

PDF text comes from the PDF's text layer; images need an OCR engine (tesseract). One line per
page on stdout (a table, or JSON with --format json), every row in the --out file. A word
classifier (*ForTokenClassification) lists each page's least confident words (JSON: every word).

exit status: 0 pages classified (unreadable inputs are listed on stderr), 1 nothing classified,
2 usage error (nothing is read), 130/143 stopped by Ctrl-C/SIGTERM (the --out file is complete),
141 stdout's reader left (| head): stopped after the current page, the --out file complete
"""


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
    check_plot_is_no_input(args.plot, args.docs, inputs)
    folder = read_model_folder(args.model)
    for path, why in inputs.skipped:
        print(f"warning: skipped {path}: {why}", file=err)
    for path, seen in inputs.repeated:
        print(f"warning: {path} is {seen} again: classified once", file=err)
    if not inputs.documents:
        print("error: nothing to classify (no PDF, and no image with an OCR engine)", file=err)
        return 1
    if getattr(args, "engine", "local") == "ray":
        return _classify_on_ray(args, inputs, out)
    stop = StopRequest()
    with stop.installed():  # from here on, SIGTERM / Ctrl-C end the run cleanly
        return _run(args, inputs, folder, ocr, stop, out, err)


def _run(args: argparse.Namespace, inputs: Inputs, folder: ModelFolder, ocr: bool,
         stop: StopRequest, out: TextIO, err: TextIO) -> int:  # fmt: skip
    if not args.quiet:  # importing deepdoctection and loading the model take a while
        print(f"loading deepdoctection and the model in {folder.path}...", file=err, flush=True)
    quiet_libraries()
    # the model is a local folder: never ask a hub (deepdoctection keeps its usual cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    writer: TableWriter | JsonWriter | WordTable
    detecting = args.layout_model is not None or args.table_model is not None
    # the analyzer every engine builds from the folder; detectors read the pixels
    analyzer = analyzer_from_folder(folder.path, ocr=ocr, skip_pixels=not detecting)
    if folder.task == "token":  # a word classifier: each page lists its least confident words
        writer = WordTable(shown=args.top_k, min_confidence=args.min_confidence,
                           min_margin=args.min_margin, json=args.format == "json")  # fmt: skip
    else:
        names = [d.name for d in inputs.documents]
        writer = (JsonWriter() if args.format == "json"
                  else TableWriter(names, folder.labels, args.top_k))  # fmt: skip
    classifier = analyzer  # captured on its own: each detector has its own capture and file
    elements = None  # detectors: each page lists its least confident elements, per detector
    if detecting:
        elements = ElementReport.build(
            analyzer, args.layout_model, args.table_model, out=args.out,
            stream=err if args.format == "json" else out, shown=args.top_k,
            min_confidence=args.min_confidence, min_margin=args.min_margin,
        )  # fmt: skip
        analyzer = elements.analyzer
    from probhook import capture_probs

    pages = 0 if args.quiet else count_pages(inputs.documents)  # only progress needs it
    progress = Progress(pages, len(inputs.documents), err, enabled=not args.quiet)
    run = Run(args, analyzer, capture_probs(classifier, sink=args.out), writer, progress, inputs,
              out, err, stop=stop, elements=elements)  # fmt: skip
    try:  # the rows files are opened and locked now, before any document
        run.cap.start()
        if elements is not None:
            elements.start()
    except (SinkBusyError, FileExistsError) as error:
        run.cap.close()
        raise UsageError(str(error)) from None
    failed: SinkError | None = None  # the rows file could not be written (a full disk)
    try:
        run.print(writer.header())  # through the bar: a terminal shows it whole
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
                if elements is not None:
                    elements.close()
            except SinkError as error:
                failed = failed or error
            written = None if failed else finish_rows_file(args.out, len(run.cap))
            for path, rows in elements.files() if elements is not None and not failed else ():
                finish_rows_file(path, rows)  # each detector's rows file too
    if failed is not None:
        return write_failed(args.out, failed, err)
    gc.collect()  # close the PDF handles while pypdfium2 is still loaded (no warnings at exit)
    report = err if args.format == "json" or run.out is not out else out  # stdout: JSON lines
    if isinstance(writer, WordTable):
        lines = writer.summary(len(inputs.skipped), written, run.stop.name)
        classified = writer.pages
    else:
        lines = summary_lines(run.totals, len(inputs.skipped), written, run.stop.name)
        classified = run.totals.classified
    print_lines(lines, report)
    if elements is not None:
        elements.summary()
    if args.plot and classified:
        save_plot(run.cap, args.plot, args.min_confidence)
        print(f"plot: {args.plot}", file=report)
    if stop.signal is not None:
        return 128 + stop.signal
    return 0 if classified else 1


@dataclass
class Run:
    """One run's state: the analyzer, its capture, what is printed, the totals."""

    args: argparse.Namespace
    analyzer: Any
    cap: Any
    writer: TableWriter | JsonWriter | WordTable
    progress: Progress
    inputs: Inputs
    out: TextIO
    err: TextIO
    totals: Totals = field(default_factory=Totals)
    stop: StopRequest = field(default_factory=StopRequest)
    elements: ElementReport | None = None

    def document(self, document: Path) -> None:
        """Classify every page of one document, a line each; a broken document is skipped."""
        try:
            flow = self.analyzer.analyze(path=os.fspath(document))
            flow.reset_state()
            pages = 0
            for page in flow:
                pages += 1
                for view in self.cap.heads.values():  # the row is written now: a full disk
                    view.buffer and view.buffer.flush()  # ends the run (SinkError)
                self.print(self._lines(document, page))
                if self.elements is not None:
                    self.elements.add(page)
                self.progress.page_done()
                if self.stop.signal is not None:
                    return
            if not pages:
                self._skip(document, NO_PAGES)
        except SinkError:
            raise  # the rows file, not the document: that ends the run
        except Exception as error:  # a broken document must not end the run
            self._skip(document, reason(error, document.name))

    def _lines(self, document: Path, page: Any) -> list[str]:
        if isinstance(self.writer, WordTable):  # word rows: the page's report
            return self.writer.page(document, page, self.cap.words(page))
        newest = self.cap.latest()  # the page's row, if this page had a forward
        dist = newest if newest is not None and newest.key == page.image_id else None
        result = PageResult(document, int(page.page_number), page.image_id, dist,
                            self.args.min_confidence, self.args.min_margin)  # fmt: skip
        self.totals.add(result)
        return [self.writer.line(result)]

    def print(self, lines: list[str]) -> None:
        """Print result lines to stdout; when its reader has left (``| head -1``) the run ends
        as SIGPIPE does, with the rows file closed complete."""
        try:
            for line in lines:
                self.progress.write(line, self.out)
        except BrokenPipeError:
            self.out = devnull(self.out)
            self.stop.signal = signal.SIGPIPE

    def _skip(self, document: Path, why: str) -> None:
        self.inputs.skipped.append((document, why))
        self.progress.write(f"warning: skipped {document}: {why}", self.err)


def _classify_on_ray(args: argparse.Namespace, inputs: Inputs, out: TextIO) -> int:
    """``--engine ray``: the documents on Ray workers, the classifier's rows in the folder
    ``--out``, each detector's in ``<out>.layout`` / ``<out>.tables`` beside it."""
    import probhook
    from probhook.integrations.ray import run

    summary = run(
        inputs.documents,
        model_dir=args.model,
        out=args.out,
        layout_model=args.layout_model,
        table_model=args.table_model,
        address=args.address,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        quiet=args.quiet,
    )
    print(summary, file=out)
    if args.plot and summary.pages:
        save_plot(probhook.load(args.out), args.plot, args.min_confidence)
        print(f"plot: {args.plot}", file=out)
    return 0 if summary.pages else 1


def _in_range(cast: Callable[[str], Any], low: float, high: float | None = None) -> Any:
    """An argparse type: ``cast`` of the text, refused outside ``low`` .. ``high``."""

    def check(text: str) -> Any:
        value = cast(text)
        if value < low or (high is not None and value > high):
            span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    check.__name__ = cast.__name__  # argparse names it in "invalid float value"
    return check


_fraction, _non_negative, _positive = _in_range(float, 0, 1), _in_range(float, 0), _in_range(int, 1)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (those that are values, not None or False), line breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:  # 0.0 == False: shown
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
    run.add_argument("--model", type=Path, help="Hugging Face *ForSequenceClassification or "
                     "*ForTokenClassification folder "
                     "(none: probhook's toy demo model)")  # fmt: skip
    demo = sub.add_parser("demo", help="the shipped toy model on the shipped sample PDFs",
                          formatter_class=_HelpFormatter)  # fmt: skip
    run.add_argument("--layout-model", type=Path, help="a layout detector folder (Table "
                     "Transformer or Deformable DETR): element rows in <out>.layout.parquet "
                     "(--engine ray: the folder <out>.layout/)")  # fmt: skip
    run.add_argument("--table-model", type=Path, help="a table-structure detector folder, run "
                     "on the layout's tables: element rows in <out>.tables.parquet "
                     "(--engine ray: <out>.tables/)")  # fmt: skip
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process; ray: Ray workers, --out a folder")  # fmt: skip
    run.add_argument("--address", help="--engine ray: the Ray cluster to join "
                     "(none: start a local Ray instance)")  # fmt: skip
    run.add_argument("--workers", type=_positive, default=1, help="--engine ray: workers")
    run.add_argument("--gpus-per-worker", type=_non_negative, default=0.0,
                     help="--engine ray: GPUs each worker asks for")  # fmt: skip
    for p in (run, demo):
        p.add_argument("--out", default=Path("probhook-results.parquet"),  # as typed: a / ends it
                       help="file for every row: .parquet, or .arrows (Arrow stream)")  # fmt: skip
        p.add_argument("--format", choices=("table", "json"), default="table",
                       help="stdout: a table, or one JSON object per page (with its words, "
                       "for a word classifier)")  # fmt: skip
        p.add_argument("--top-k", type=_positive, default=3, help="labels shown per page")
        p.add_argument("--min-confidence", type=_fraction, default=0.9,
                       help="flag pages whose top probability is below this")  # fmt: skip
        p.add_argument("--min-margin", type=_fraction, default=None,
                       help="flag pages whose top-1 minus top-2 is below this")  # fmt: skip
        p.add_argument("--plot", default=None,
                       help="save a confidence histogram (.png, .svg, .pdf, .jpg)")  # fmt: skip
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    from probhook.cli_report import add_parser

    add_parser(sub, _HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``probhook`` entry point; returns the exit status."""
    from probhook import demo

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "report":
        from probhook.cli_report import main as report

        return report(args)
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
    args.layout_model = getattr(args, "layout_model", None)
    args.table_model = getattr(args, "table_model", None)
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
