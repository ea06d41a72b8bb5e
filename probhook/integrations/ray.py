"""Ray Data: classify documents on a Ray cluster and keep every distribution the local engine
keeps (``pip install probhook[ray]``; imported only when used).

Each Ray worker builds the analyzer once (by default the one ``probhook run`` builds) and runs
its batches of documents inside the captures the local engine runs: the classifier's (one row
per page, or per word for a token classifier) and, with ``layout_model=`` / ``table_model=``,
one per detector (one row per element). Each output's rows are in the columns of the local
Parquet output ([`rows_to_arrow`][probhook.arrow_rows.rows_to_arrow] with the derived columns)
plus ``status``, and each output is written to its own folder: the classifier's to ``out``, a
detector's to ``<out>.layout`` / ``<out>.tables`` beside it:

    import probhook
    from probhook.integrations.ray import classify, documents_dataset, write

    rows = classify(documents_dataset("scans/"), model_dir="my-layoutlm/", workers=4,
                    layout_model="layout-detector/")
    write(rows, "results/")                  # results/ and results.layout/
    probhook.load("results/").calibration(truth)
    probhook.load("results.layout/").elements(page)

``status`` is ``"ok"`` for a row of the model,
[`NO_WORDS`][probhook.integrations.ray_worker.NO_WORDS] for a page the classifier did not run on
(deepdoctection skips pages without words), and the reason for a document that could not be
read (one row, its page columns empty but ``location`` and ``file_name``); these status rows
are in ``out``. Nothing is dropped and a bad document never stops the run.
[`probhook.load`][probhook.load] reads the ``"ok"`` rows of a folder, ``probhook report out``
every output.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probhook.integrations.deepdoctection.analyzer import UsageError, read_model_folder
from probhook.integrations.ray_logs import held_stderr, quiet_ray
from probhook.integrations.ray_worker import NO_WORDS, OK, STATUS, DocumentClassifier, folder_of
from probhook.integrations.ray_worker import default_analyzer as default_analyzer  # re-exported
from probhook.integrations.ray_worker import unpack as unpack  # re-exported

if TYPE_CHECKING:
    import ray.data

DOCUMENT_SUFFIXES = (".pdf",)
"""What [`documents_dataset`][documents_dataset] reads by default (images need an OCR engine on
every worker)."""
DETECTOR_PARTS = ("layout", "tables")
"""The outputs of the detectors, each in its folder ``<out>.<part>``."""


def documents_dataset(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    suffixes: Sequence[str] | None = DOCUMENT_SUFFIXES,
) -> ray.data.Dataset:
    """A Ray dataset of documents: columns ``bytes`` and ``path`` (as given: a page's
    ``location`` is this path, as in a local run).

    ``paths`` is a folder (searched recursively for files ending in ``suffixes``; None: every
    file), a file (read whatever its name), a list of them, or any path
    ``ray.data.read_binary_files`` reads (a bucket, say). Local folders are listed here, not by
    Ray, whose suffix filter reads a ``?`` in a file name as the start of a URL query and drops
    the file.

    Reading takes no CPU slot: the classifying workers may hold every CPU of a small cluster,
    and a read waiting for a free CPU would wait for ever."""
    import ray.data

    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    ends = None if suffixes is None else tuple(s.lower() for s in suffixes)
    local: list[str] = []
    remote: list[str] = []
    for item in given:
        path = os.fspath(item)
        if "://" in path:
            remote.append(path)
        elif os.path.isdir(path):
            found = (f for f in Path(path).rglob("*") if f.is_file())
            local += sorted(
                os.fspath(f) for f in found if not ends or f.name.lower().endswith(ends)
            )
        else:
            local.append(path)
    if not local and not remote:
        raise ValueError(f"no document in {given} (files ending in {suffixes})")
    parts: list[tuple[list[str], list[str] | None]] = [(local, None)] if local else []
    if remote:
        parts.append((remote, None if ends is None else [s.lstrip(".") for s in ends]))
    sets = [ray.data.read_binary_files(where, include_paths=True, file_extensions=extensions,
                                       num_cpus=0) for where, extensions in parts]  # fmt: skip
    return sets[0] if len(sets) == 1 else sets[0].union(*sets[1:])


def classify(
    documents: ray.data.Dataset,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    factory: Callable[[], Any] | None = None,
    layout_model: str | os.PathLike[str] | None = None,
    table_model: str | os.PathLike[str] | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 4,
    retries: int = 3,
    capacity: int = 1024,
) -> ray.data.Dataset:
    """Every output's rows of ``documents`` (a dataset with ``path`` and optionally ``bytes``,
    as [`documents_dataset`][documents_dataset] makes), computed by ``workers``
    [`DocumentClassifier`][probhook.integrations.ray_worker.DocumentClassifier] actors: one
    packed row per output and batch ([`unpack`][probhook.integrations.ray_worker.unpack] reads
    a batch, [`write`][write] writes each output to its folder).

    A worker that dies is restarted (up to ``retries`` times per worker) and its unfinished
    batches run again, so each row is written once. Lazy, like every Ray dataset: write it or
    iterate it to run it. The model and detector folders are checked here, not in every worker.
    """
    for name, value in (("workers", workers), ("batch_size", batch_size), ("capacity", capacity)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if gpus_per_worker < 0 or retries < 0:
        raise ValueError(f"gpus_per_worker and retries must be >= 0, got {gpus_per_worker}, "
                         f"{retries}")  # fmt: skip
    if model_dir is not None:
        read_model_folder(Path(model_dir))
    _check_detectors(layout_model, table_model)
    import ray.data

    arguments = {"model_dir": model_dir, "factory": factory, "capacity": capacity,
                 "layout_model": layout_model, "table_model": table_model}  # fmt: skip
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote keywords for map_batches with no other way yet to bound an
        # actor's restarts; its default, restarting and retrying without limit, would loop for
        # ever on a document that crashes its worker every time
        warnings.simplefilter("ignore", DeprecationWarning)
        return documents.map_batches(
            DocumentClassifier,
            fn_constructor_kwargs=arguments,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus_per_worker or None,
            max_restarts=retries,
            max_task_retries=retries,
        )


def _check_detectors(
    layout: str | os.PathLike[str] | None, tables: str | os.PathLike[str] | None
) -> None:
    if layout is not None or tables is not None:
        from probhook.integrations.deepdoctection.element_table import check_detectors

        check_detectors(*(None if p is None else Path(p) for p in (layout, tables)))


def write(rows: ray.data.Dataset, out: str | os.PathLike[str]) -> set[str]:
    """Write [`classify`][classify]'s rows: the classifier's to the folder ``out`` and each
    detector's to ``<out>.<part>`` beside it, one Parquet file per output and write task,
    written where the task runs (a local path every node can write to, or a URI such as
    ``s3://bucket/run``); returns the outputs that got rows. Writing takes no CPU slot, as
    reading: each block is written as it comes instead of waiting for a worker's CPU at the
    end, with every row held until then."""
    from probhook.integrations.ray_sink import rows_datasink

    sink = rows_datasink(out if "://" in os.fspath(out) else Path(out).resolve())
    with warnings.catch_warnings():  # see classify: Ray 2.60 deprecates remote arguments
        warnings.simplefilter("ignore", DeprecationWarning)
        rows.write_datasink(sink, ray_remote_args={"num_cpus": 0})
    parts: set[str] = sink.parts
    return parts


@dataclass
class RunSummary:
    """What [`run`][run] did: pages classified, rows written per output, pages not classified,
    documents that failed."""

    out: Path
    pages: int
    documents: int
    not_classified: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    seconds: float = 0.0
    workers: int = 1
    rows: int = 0
    """The ``"ok"`` rows in ``out``: one per page, or per word for a word classifier."""
    detectors: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Each detector's output: its rows (elements) and Parquet files in ``<out>.<part>``."""

    def __str__(self) -> str:
        rate = self.pages / self.seconds if self.seconds else float("nan")
        lines = [
            f"{self.pages} pages classified in {self.documents} documents by {self.workers} Ray "
            f"workers in {self.seconds:.1f} s ({rate:.1f} pages/s)",
        ]
        if self.not_classified:
            lines.append(f"{self.not_classified} pages not classified (no words)")
        lines += [f"failed: {where}: {why}" for where, why in self.failed]
        lines.append(f"all rows: {self.out}/ ({self.rows} rows in {self.files} Parquet files; "
                     "probhook.load reads it)")  # fmt: skip
        for part, (rows, files) in self.detectors.items():
            where = f"{folder_of(self.out, part)}/ ({rows} elements in {files} Parquet files)"
            lines.append(f"{part} rows: {where}" if rows else f"{part}: no elements")
        return "\n".join(lines)


def detector_parts(layout_model: Any, table_model: Any) -> list[str]:
    """The detector outputs of a run given these models (``layout``, ``tables``)."""
    given = (layout_model, table_model)
    return [part for part, model in zip(DETECTOR_PARTS, given, strict=True) if model is not None]


def check_folders(out: str | os.PathLike[str], parts: Sequence[str] = ()) -> None:
    """Each folder a run writes (``out``, ``<out>.<part>`` for ``parts``) is new or empty, and
    no other ``<out>.<head>`` folder (an earlier run's, that a reader would take for this run's)
    is beside it: a [`UsageError`][probhook.integrations.deepdoctection.analyzer.UsageError]
    before any document otherwise."""
    for part in ("", *parts):
        folder = Path(folder_of(out, part))
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            option = "--out" if not part else f"--out {out}: the {part} rows' folder"
            raise UsageError(f"{option} {folder} exists: --engine ray writes folders of Parquet "
                             "files; give a new or empty folder")  # fmt: skip
    given = Path(folder_of(out, ""))
    ours = {Path(folder_of(out, part)).name for part in parts}
    for other in sorted(given.parent.glob(f"{given.name}.*")):
        head = other.name[len(given.name) + 1 :]
        if other.is_dir() and head and "." not in head and other.name not in ours:
            raise UsageError(f"--out {out}: the folder {other} beside it holds an earlier run's "
                             f"rows, which probhook report {out} would read as this run's: move "
                             "or remove it, or give another --out")  # fmt: skip


def run(
    documents: Sequence[str | os.PathLike[str]],
    *,
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    layout_model: str | os.PathLike[str] | None = None,
    table_model: str | os.PathLike[str] | None = None,
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 4,
    quiet: bool = False,
) -> RunSummary:
    """``probhook run --engine ray``: classify ``documents`` on Ray and write the classifier's
    rows to the folder ``out`` and each detector's to ``<out>.layout`` / ``<out>.tables``
    (see [`write`][write]). Every folder and model is checked first; joins the cluster at
    ``address``, or starts a local Ray instance (and stops it at the end)."""
    import ray
    import ray.data

    parts = detector_parts(layout_model, table_model)
    check_folders(out, parts)
    if not documents:
        raise UsageError("nothing to classify (no PDF)")
    read_model_folder(Path(model_dir))
    _check_detectors(layout_model, table_model)
    resolved = [None if p is None else Path(p).resolve() for p in (layout_model, table_model)]
    started = not ray.is_initialized()
    with quiet_ray(quiet), held_stderr(quiet):
        if started:
            where = {"address": address} if address is not None else {
                "num_cpus": max(2, workers), "include_dashboard": False}  # fmt: skip
            ray.init(**where, log_to_driver=not quiet,
                     logging_level=logging.ERROR if quiet else logging.INFO)  # fmt: skip
    try:
        ray.data.DataContext.get_current().enable_progress_bars = not quiet
        begin = time.perf_counter()
        rows = classify(
            documents_dataset(documents, suffixes=None),  # the files given, whatever their names
            model_dir=Path(model_dir).resolve(),
            layout_model=resolved[0],
            table_model=resolved[1],
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            batch_size=batch_size,
        )
        with quiet_ray(quiet):
            write(rows, out)
        seconds = time.perf_counter() - begin
    finally:
        if started:
            ray.shutdown()
    return summarize(out, seconds=seconds, workers=workers, documents=documents, parts=parts)


def summarize(
    out: str | os.PathLike[str],
    *,
    seconds: float = 0.0,
    workers: int = 1,
    documents: Sequence[str | os.PathLike[str]] = (),
    parts: Sequence[str] = (),
) -> RunSummary:
    """Count the rows of a finished run's folder by status (reads only the small columns), and
    the rows of each detector output in ``parts``; each of ``documents`` without a row is
    counted as failed: nothing given is lost silently."""
    import pyarrow.dataset as pds

    folder = pds.dataset(os.fspath(out), format="parquet")
    names = folder.schema.names
    table = folder.to_table(columns=[c for c in (STATUS, "location", "image_id") if c in names])
    status, where = table.column(STATUS).to_pylist(), table.column("location").to_pylist()
    failed = sorted((w, s) for w, s in zip(where, status, strict=True) if s not in (OK, NO_WORDS))
    seen = {os.path.abspath(w) for w in where if w is not None}
    failed += [(os.fspath(d), "not read: no row came back from Ray") for d in documents
               if os.path.abspath(d) not in seen]  # fmt: skip
    read = len({w for w, s in zip(where, status, strict=True) if s in (OK, NO_WORDS)})
    pages = status.count(OK)
    if "image_id" in names:  # the pages the rows are on (a word classifier's: many a page)
        ids = table.column("image_id").to_pylist()
        pages = len({i for i, s in zip(ids, status, strict=True) if s == OK})
    detectors = {}
    for part in parts:  # a detector that found nothing wrote no folder
        path = Path(folder_of(out, part))
        found = pds.dataset(os.fspath(path), format="parquet") if path.is_dir() else None
        detectors[part] = (found.count_rows(), len(found.files)) if found is not None else (0, 0)
    return RunSummary(
        Path(out), pages, read, status.count(NO_WORDS), failed, len(folder.files), seconds,
        workers, status.count(OK), detectors,
    )  # fmt: skip
