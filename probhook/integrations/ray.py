"""Ray Data: classify documents on a Ray cluster and keep every page's distribution
(``pip install probhook[ray]``; imported only when used).

Each Ray worker builds the analyzer once (by default the one ``probhook run`` builds) and runs its
batches of documents inside a capture; every batch leaves as an Arrow table with one row per page,
in the columns of the local Parquet output
([`rows_to_arrow`][probhook.arrow_rows.rows_to_arrow] with the derived columns) plus ``status``:

    import ray
    from probhook.integrations.ray import classify, documents_dataset

    rows = classify(documents_dataset("scans/"), model_dir="my-layoutlm/", workers=4)
    rows.write_parquet("results/")           # one file per block
    probhook.load("results/").calibration(truth)

``status`` is ``"ok"`` for a classified page, [`NO_WORDS`][NO_WORDS] for a page the classifier did
not run on (deepdoctection skips pages without words), and the reason for a document that could not
be read (one row, its page columns empty but ``location`` and ``file_name``). Nothing is dropped and
a bad document never stops the run. [`probhook.load`][probhook.load] reads the ``"ok"`` rows of a
folder.
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

from probhook.block import RowBlock
from probhook.integrations.deepdoctection.analyzer import (
    NO_PAGES,
    UsageError,
    read_model_dir,
    reason,
)
from probhook.integrations.ray_logs import held_stderr, quiet_ray

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import ray.data

STATUS = "status"
"""The column that says what happened to a page or document."""
OK = "ok"
NO_WORDS = "not classified (no words)"
DOCUMENT_SUFFIXES = (".pdf",)
"""What [`documents_dataset`][documents_dataset] reads by default (images need an OCR engine on
every worker)."""


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


def default_analyzer(model_dir: str | os.PathLike[str]) -> Any:
    """The analyzer ``probhook run`` builds: PDF text extraction (OCR when tesseract is on the
    PATH) and the sequence classifier in ``model_dir``, read offline."""
    from probhook.integrations.deepdoctection.analyzer import (
        build_analyzer,
        ocr_available,
        quiet_libraries,
    )

    quiet_libraries()  # a worker's log lines and warnings would all be forwarded to the driver
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    wrapper, labels = read_model_dir(Path(model_dir))
    return build_analyzer(Path(model_dir), wrapper, labels, ocr_available())


class _Blocks:
    """A sink that keeps the blocks a batch's capture writes (they leave with the batch)."""

    def __init__(self) -> None:
        self.blocks: list[RowBlock] = []

    def write(self, rows: RowBlock) -> None:
        self.blocks.append(rows)

    def close(self) -> None:
        """Nothing to release: the blocks are read after the capture."""


class PageClassifier:
    """A callable class for ``Dataset.map_batches``: one analyzer per worker, one row per page.

    Args:
        model_dir: a Hugging Face sequence-classifier folder, read by
            [`default_analyzer`][default_analyzer].
        factory: instead of ``model_dir``, a function returning the analyzer (a deepdoctection
            pipe); called once in each worker.
        capacity: rows the capture's ring buffer keeps; a batch's rows beyond it go straight to
            the batch's output, so a worker's memory stays at this size plus one batch.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        factory: Callable[[], Any] | None = None,
        capacity: int = 1024,
    ) -> None:
        from probhook import capture_probs
        from probhook.head_view import HeadView

        if (model_dir is None) == (factory is None):
            raise ValueError("give the model as model_dir= or factory=, exactly one")
        self.analyzer = factory() if factory is not None else default_analyzer(model_dir)  # type: ignore[arg-type]
        self.capacity = capacity
        probe = capture_probs(self.analyzer)
        probe.start()  # the heads and their columns, known before any page
        probe.stop(warn=False)
        if len(probe.heads) != 1:
            raise ValueError(
                f"the analyzer has {len(probe.heads)} classifier heads ({list(probe.heads)}); "
                "the Ray engine writes one label space: give an analyzer with one"
            )
        head: HeadView = next(iter(probe.heads.values()))
        self.head, self.columns = head.name, head.schema
        self.schema = self._to_arrow(head.rows()).schema

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Classify a batch of documents (columns ``path`` and, optionally, ``bytes``)."""
        import pyarrow as pa

        from probhook import capture_probs
        from probhook.integrations.deepdoctection.adapter import page_meta

        paths = [str(p) for p in batch["path"]]
        contents = batch["bytes"] if "bytes" in batch else [None] * len(paths)
        blocks = _Blocks()
        pages: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        cap = capture_probs(self.analyzer, capacity=self.capacity, sink=blocks)
        cap.start()
        try:
            for path, data in zip(paths, contents, strict=True):
                try:
                    read = [page_meta(page) for page in self._pages(path, data)]
                except Exception as error:  # a broken document is reported, the batch goes on
                    failed.append(self._failure(path, reason(error, Path(path).name)))
                    continue
                pages.extend(read)
                if not read:  # a PDF with 0 pages: reported, as a local run does
                    failed.append(self._failure(path, NO_PAGES))
        finally:
            cap.stop(warn=False)
        tables = [self._to_arrow(block) for block in blocks.blocks]
        classified = {key for block in blocks.blocks for key in block.columns["key"]}
        extra = [
            {**self._page_columns(meta), STATUS: NO_WORDS}
            for meta in pages
            if meta["key"] not in classified
        ]
        tables.append(pa.Table.from_pylist([*extra, *failed], schema=self.schema))
        return pa.concat_tables(tables)

    def _pages(self, path: str, data: Any) -> Any:
        kwargs: dict[str, Any] = {"path": path}
        if data is not None:  # bytes read by Ray; the path names them, as a local run would
            kwargs.update(bytes=bytes(data), file_type=Path(path).suffix.lower())
        flow = self.analyzer.analyze(**kwargs)
        flow.reset_state()
        return flow

    def _page_columns(self, meta: dict[str, Any]) -> dict[str, Any]:
        page = {c: meta.get(c) for c in self.columns if c not in ("key", "head")}
        return {"key": meta["key"], "head": self.head, **page}

    def _failure(self, path: str, why: str) -> dict[str, Any]:
        return {"head": self.head, "location": path, "file_name": Path(path).name, STATUS: why}

    def _to_arrow(self, rows: RowBlock) -> pa.Table:
        import pyarrow as pa

        from probhook.arrow_rows import rows_to_arrow

        table = rows_to_arrow(rows, self.columns, derived=True)
        status = pa.array([OK] * len(table), pa.string())
        return table.append_column(STATUS, status).replace_schema_metadata(table.schema.metadata)


def classify(
    documents: ray.data.Dataset,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    factory: Callable[[], Any] | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 4,
    retries: int = 3,
    capacity: int = 1024,
) -> ray.data.Dataset:
    """The page rows of ``documents`` (a dataset with ``path`` and optionally ``bytes``, as
    [`documents_dataset`][documents_dataset] makes), computed by ``workers``
    [`PageClassifier`][PageClassifier] actors.

    A worker that dies is restarted (up to ``retries`` times per worker) and its unfinished
    batches run again, so each page is written once. Lazy, like every Ray dataset: write it
    (``write_parquet``) or iterate it to run it.
    """
    for name, value in (("workers", workers), ("batch_size", batch_size), ("capacity", capacity)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if gpus_per_worker < 0 or retries < 0:
        raise ValueError(f"gpus_per_worker and retries must be >= 0, got {gpus_per_worker}, "
                         f"{retries}")  # fmt: skip
    if model_dir is not None:
        read_model_dir(Path(model_dir))  # a bad folder fails here, not in every worker
    import ray.data

    arguments = {"model_dir": model_dir, "factory": factory, "capacity": capacity}
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote keywords for map_batches with no other way yet to bound an
        # actor's restarts; its default, restarting and retrying without limit, would loop for
        # ever on a document that crashes its worker every time
        warnings.simplefilter("ignore", DeprecationWarning)
        return documents.map_batches(
            PageClassifier,
            fn_constructor_kwargs=arguments,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus_per_worker or None,
            max_restarts=retries,
            max_task_retries=retries,
        )


@dataclass
class RunSummary:
    """What [`run`][run] did: rows written, pages not classified, documents that failed."""

    out: Path
    pages: int
    documents: int
    not_classified: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    seconds: float = 0.0
    workers: int = 1

    def __str__(self) -> str:
        rate = self.pages / self.seconds if self.seconds else float("nan")
        lines = [
            f"{self.pages} pages classified in {self.documents} documents by {self.workers} Ray "
            f"workers in {self.seconds:.1f} s ({rate:.1f} pages/s)",
        ]
        if self.not_classified:
            lines.append(f"{self.not_classified} pages not classified (no words)")
        lines += [f"failed: {where}: {why}" for where, why in self.failed]
        lines.append(f"all rows: {self.out}/ ({self.files} Parquet files; probhook.load reads it)")
        return "\n".join(lines)


def run(
    documents: Sequence[str | os.PathLike[str]],
    *,
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 4,
    quiet: bool = False,
) -> RunSummary:
    """``probhook run --engine ray``: classify ``documents`` on Ray and write every page's row to
    the folder ``out`` (one Parquet file per block). Joins the cluster at ``address``, or starts
    a local Ray instance (and stops it at the end)."""
    import ray
    import ray.data

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists: --engine ray writes a folder of Parquet files, give a "
                         "new or empty folder")  # fmt: skip
    if not documents:
        raise UsageError("nothing to classify (no PDF)")
    read_model_dir(Path(model_dir))
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
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            batch_size=batch_size,
        )
        with warnings.catch_warnings(), quiet_ray(quiet):  # see classify: Ray 2.60 deprecates
            warnings.simplefilter("ignore", DeprecationWarning)  # remote arguments
            # writing takes no CPU slot, as reading: each block is written as it comes instead
            # of waiting for a worker's CPU at the end, with every row held until then
            rows.write_parquet(os.fspath(out.resolve()), ray_remote_args={"num_cpus": 0})
        seconds = time.perf_counter() - begin
    finally:
        if started:
            ray.shutdown()
    return summarize(out, seconds=seconds, workers=workers, documents=documents)


def summarize(
    out: str | os.PathLike[str],
    *,
    seconds: float = 0.0,
    workers: int = 1,
    documents: Sequence[str | os.PathLike[str]] = (),
) -> RunSummary:
    """Count the rows of a finished run's folder by status (reads only the small columns); each
    of ``documents`` without a row is counted as failed: nothing given is lost silently."""
    import pyarrow.dataset as pds

    folder = pds.dataset(os.fspath(out), format="parquet")
    table = folder.to_table(columns=[STATUS, "location"])
    status, where = table.column(STATUS).to_pylist(), table.column("location").to_pylist()
    failed = sorted((w, s) for w, s in zip(where, status, strict=True) if s not in (OK, NO_WORDS))
    seen = {os.path.abspath(w) for w in where if w is not None}
    failed += [(os.fspath(d), "not read: no row came back from Ray") for d in documents
               if os.path.abspath(d) not in seen]  # fmt: skip
    read = len({w for w, s in zip(where, status, strict=True) if s in (OK, NO_WORDS)})
    return RunSummary(
        Path(out), status.count(OK), read, status.count(NO_WORDS), failed,
        len(folder.files), seconds, workers,
    )  # fmt: skip
