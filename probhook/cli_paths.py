"""The command line's files: the documents found in files and folders, the output paths (checked
before any document is read) and page counts for progress."""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from probhook.integrations.deepdoctection.analyzer import UsageError

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
OUT_SUFFIXES = (".parquet", ".arrows")
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


@dataclass
class Inputs:
    """The documents to classify and the inputs skipped, with the reason."""

    documents: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    repeated: list[tuple[Path, Path]] = field(default_factory=list)
    """Files given again (the same path twice, a file and its folder, a link to it), each
    with the path it is read under: classified once."""


def collect_inputs(paths: list[Path], ocr: bool) -> Inputs:
    """PDFs and (with OCR) images from files and folders; everything else is reported, and a
    file reached twice is read once."""
    found = Inputs()
    first: dict[tuple[int, int], Path] = {}
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or folder: {path}")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            seen = first.setdefault((stat.st_dev, stat.st_ino), file)
            if seen is not file:
                found.repeated.append((file, seen))
                continue
            suffix = file.suffix.lower()
            if suffix in PDF_SUFFIXES or (suffix in IMAGE_SUFFIXES and ocr):
                found.documents.append(file)
            elif suffix in IMAGE_SUFFIXES:
                found.skipped.append((file, "image input needs an OCR engine: install tesseract"))
            else:
                found.skipped.append((file, f"not a PDF or image ({suffix or 'no suffix'})"))
    return found


def check_output(
    option: str, given: str | os.PathLike[str], suffixes: tuple[str, ...], example: str
) -> Path:
    """``given`` (as typed: a trailing ``/`` names a folder) can be written as a new file with
    one of ``suffixes`` (exactly, lower case: what the writers read); checked, creating its
    folder, before anything is classified, so a bad path costs nothing. Returns the path."""
    text, path = os.fspath(given), Path(given)
    if path.is_dir() or text.endswith(("/", os.sep)):
        kind = "is a folder" if path.is_dir() else "ends in /: a folder name"
        raise UsageError(f"{option} {text} {kind}: give a file name such as {path / example}")
    if path.suffix not in suffixes:
        case = (f" (in lower case: {path.with_suffix(path.suffix.lower()).name})"
                if path.suffix.lower() in suffixes else "")  # fmt: skip
        raise UsageError(
            f"{option} {path}: the file name must end in {' or '.join(suffixes)}{case}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"{option} {path}: cannot write there ({reason})") from None
    return path


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
    if getattr(args, "engine", "local") == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError('--engine ray needs ray, which is not installed: '
                         'pip install "probhook[ray]"')  # fmt: skip
    if getattr(args, "engine", "local") == "ray":  # Ray writes folders of Parquet files
        from probhook.integrations.ray import check_folders, detector_parts

        args.out = Path(args.out)
        models = (getattr(args, "layout_model", None), getattr(args, "table_model", None))
        check_folders(args.out, detector_parts(*models))
    else:
        args.out = check_output("--out", args.out, OUT_SUFFIXES, "probhook-results.parquet")
        check_no_stale_heads(args.out, getattr(args, "layout_model", None),
                             getattr(args, "table_model", None))  # fmt: skip
    if args.plot is not None:
        args.plot = check_output("--plot", args.plot, PLOT_SUFFIXES, "confidence.png")
        if args.plot.resolve() == args.out.resolve():
            raise UsageError(f"--plot and --out are the same file ({args.out})")


def check_no_stale_heads(out: Path, layout_model: Path | None, table_model: Path | None) -> None:
    """No file beside ``out`` that a reader of the run takes for one of its heads
    (``<stem>.<head><suffix>``, as ``probhook report`` finds them) is left from an earlier run:
    each must be one this run writes (``layout``, ``tables``) and replaces."""
    from probhook.arrow import stream_path
    from probhook.scan import siblings

    ours = {f"{out.stem}.{part}{out.suffix}" for part, model in
            (("layout", layout_model), ("tables", table_model)) if model is not None}  # fmt: skip
    stale = [p for p in siblings(out) if p.name not in ours]
    if stale:
        names = ", ".join(p.name if p.exists() else stream_path(p).name for p in stale)
        raise UsageError(f"--out {out}: {names} beside it holds an earlier run's rows, which "
                         f"probhook report {out} would read as this run's: move or remove it, "
                         "or give another --out")  # fmt: skip


def check_plot_is_no_input(plot: Path | None, given: list[Path], inputs: Inputs) -> None:
    """``--plot`` must not overwrite a document to classify (or any file given as input)."""
    if plot is None or not plot.exists():
        return
    for path in [*given, *inputs.documents, *(p for p, _ in inputs.skipped)]:
        if path.exists() and plot.samefile(path):
            raise UsageError(f"--plot {plot} is one of the inputs ({path}): it would be "
                             "overwritten; give another file name for the plot")  # fmt: skip


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
