"""A Ray worker of ``probhook run --engine ray``: the analyzer and the captures the local engine
runs (the classifier's, one per detector), a batch of documents at a time, and every output's
rows of the batch packed into one table for the trip back.

A Ray dataset has one schema, a run several outputs, each with its own columns and labels: the
classifier's rows (one per page, or one per word for a token classifier) and each detector's
(one per element). A batch therefore leaves the worker as one row per output: ``part`` (``""``
for the classifier's rows, ``"layout"`` / ``"tables"`` for a detector's) and ``rows``, that
output's Arrow table as an IPC stream; [`unpack`][unpack] reads them back.

Examples:
    >>> import pyarrow as pa
    >>> packed = pack({"": pa.table({"key": ["p1"]}), "layout": pa.table({"key": ["e1", "e2"]})})
    >>> packed.column_names, packed.num_rows
    (['part', 'rows'], 2)
    >>> {part: table.num_rows for part, table in unpack(packed).items()}
    {'': 1, 'layout': 2}
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probhook.block import RowBlock
from probhook.integrations.deepdoctection.analyzer import NO_PAGES, reason

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

STATUS = "status"
"""The column that says what happened to a page or document."""
OK = "ok"
NO_WORDS = "not classified (no words)"
PART, ROWS = "part", "rows"
"""The columns of a packed batch: the output's name and its rows (an Arrow IPC stream)."""


def folder_of(out: str | os.PathLike[str], part: str) -> str:
    """Where the rows of output ``part`` go: the folder ``out`` itself for the classifier's
    (``""``), ``<out>.<part>`` beside it for a detector's (as the local engine's
    ``run.parquet`` and ``run.layout.parquet``).

    Examples:
        >>> folder_of("results/", ""), folder_of("results/", "layout")
        ('results', 'results.layout')
    """
    base = os.fspath(out)
    base = base.rstrip("/") or base  # "results/" names the folder "results"
    return f"{base}.{part}" if part else base


def default_analyzer(model_dir: str | os.PathLike[str], *, skip_pixels: bool = True) -> Any:
    """The analyzer ``probhook run`` builds: PDF text extraction (OCR when tesseract is on the
    PATH) and the classifier in ``model_dir`` (pages or words), read offline. ``skip_pixels``:
    no page pixels for a model that does not read them (False when detectors, which read the
    pixels, run before it)."""
    from probhook.integrations.deepdoctection.analyzer import analyzer_from_folder, quiet_libraries

    quiet_libraries()  # a worker's log lines and warnings would all be forwarded to the driver
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return analyzer_from_folder(model_dir, skip_pixels=skip_pixels)


def pack(tables: Mapping[str, pa.Table]) -> pa.Table:
    """One row per output: its name (``part``) and its table as an Arrow IPC stream."""
    import pyarrow as pa

    streams = []
    for table in tables.values():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        streams.append(sink.getvalue().to_pybytes())
    return pa.table({PART: pa.array(list(tables), pa.string()),
                     ROWS: pa.array(streams, pa.large_binary())})  # fmt: skip


def unpack(packed: pa.Table) -> dict[str, pa.Table]:
    """The rows of each output in a packed batch (or several: each output's tables joined)."""
    import pyarrow as pa

    found: dict[str, list[pa.Table]] = {}
    for part, data in zip(packed.column(PART).to_pylist(), packed.column(ROWS).to_pylist(),
                          strict=True):  # fmt: skip
        found.setdefault(part, []).append(pa.ipc.open_stream(data).read_all())
    return {part: join(tables) for part, tables in found.items()}


def join(tables: list[pa.Table]) -> pa.Table:
    """Tables of one output in one; a column only some have (a status row has no logits) is
    empty in the others; the first table's metadata (labels, column kinds) is kept."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    joined = pa.concat_tables(tables, promote_options="default")
    return joined.replace_schema_metadata(tables[0].schema.metadata)


class _Blocks:
    """A sink that keeps the blocks a batch's capture writes (they leave with the batch)."""

    def __init__(self) -> None:
        self.blocks: list[RowBlock] = []

    def write(self, rows: RowBlock) -> None:
        self.blocks.append(rows)

    def close(self) -> None:
        """Nothing to release: the blocks are read after the capture."""


@dataclass(frozen=True)
class _Output:
    """One capture's output: its single head's name and columns, its Arrow schema."""

    part: str
    target: Any
    head: str
    columns: Mapping[str, Any]
    schema: pa.Schema

    def tables(self, blocks: Iterable[RowBlock]) -> list[pa.Table]:
        return [to_arrow(block, self.columns) for block in blocks]


def to_arrow(rows: RowBlock, columns: Mapping[str, Any]) -> pa.Table:
    """``rows`` in the columns of the local Parquet output, with ``status`` ``"ok"``."""
    import pyarrow as pa

    from probhook.arrow_rows import rows_to_arrow

    table = rows_to_arrow(rows, columns, derived=True)
    status = pa.array([OK] * len(table), pa.string())
    return table.append_column(STATUS, status).replace_schema_metadata(table.schema.metadata)


def _probe(part: str, target: Any) -> _Output:
    """The head of ``target`` and its columns, known before any page (one head: one output)."""
    from probhook import capture_probs

    probe = capture_probs(target)
    probe.start()
    probe.stop(warn=False)
    if len(probe.heads) != 1:
        raise ValueError(
            f"the analyzer has {len(probe.heads)} classifier heads ({list(probe.heads)}); "
            "the Ray engine writes one label space per output: give an analyzer with one "
            "(detectors: layout_model= and table_model=)"
        )
    head = next(iter(probe.heads.values()))
    columns = dict(head.schema)
    return _Output(part, target, head.name, columns, to_arrow(head.rows(), columns).schema)


class DocumentClassifier:
    """A callable class for ``Dataset.map_batches``: one analyzer per worker, run inside the
    captures the local engine runs, every output's rows of a batch [`pack`][pack]ed.

    Args:
        model_dir: a Hugging Face classifier folder (pages or words), read by
            [`default_analyzer`][default_analyzer].
        factory: instead of ``model_dir``, a function returning the analyzer (a deepdoctection
            pipe with one classifier head); called once in each worker.
        layout_model: a layout detector folder (Table Transformer or Deformable DETR), run
            before the analyzer; its element rows are the output ``"layout"``.
        table_model: a table-structure detector folder, run on the layout's tables; output
            ``"tables"``.
        capacity: rows each capture's ring buffer keeps; a batch's rows beyond it go straight
            to the batch's output, so a worker's memory stays at this size plus one batch.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        factory: Callable[[], Any] | None = None,
        layout_model: str | os.PathLike[str] | None = None,
        table_model: str | os.PathLike[str] | None = None,
        capacity: int = 1024,
    ) -> None:
        from probhook.integrations.deepdoctection.element_table import with_detectors

        if (model_dir is None) == (factory is None):
            raise ValueError("give the model as model_dir= or factory=, exactly one")
        detecting = layout_model is not None or table_model is not None
        classifier = (factory() if factory is not None
                      else default_analyzer(model_dir, skip_pixels=not detecting))  # type: ignore[arg-type]  # fmt: skip
        services: list[tuple[str, Any]] = []
        self.analyzer = classifier
        if detecting:
            self.analyzer, services = with_detectors(
                classifier,
                None if layout_model is None else Path(layout_model),
                None if table_model is None else Path(table_model),
            )
        self.capacity = capacity
        self.outputs = {part: _probe(part, target)
                        for part, target in [("", classifier), *services]}  # fmt: skip
        main = self.outputs[""]
        self.head, self.columns, self.schema = main.head, main.columns, main.schema

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Classify a batch of documents (columns ``path`` and, optionally, ``bytes``)."""
        import pyarrow as pa

        from probhook import capture_probs
        from probhook.integrations.deepdoctection.adapter import page_meta

        paths = [str(p) for p in batch["path"]]
        contents = batch["bytes"] if "bytes" in batch else [None] * len(paths)
        sinks = {part: _Blocks() for part in self.outputs}
        pages: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        with contextlib.ExitStack() as captures:  # a capture that fails to start stops the rest
            for part, output in self.outputs.items():
                cap = capture_probs(output.target, capacity=self.capacity, sink=sinks[part])
                cap.start()
                captures.callback(cap.stop, warn=False)
            for path, data in zip(paths, contents, strict=True):
                try:
                    read = [page_meta(page) for page in self._pages(path, data)]
                except Exception as error:  # a broken document is reported, the batch goes on
                    failed.append(self._failure(path, reason(error, Path(path).name)))
                    continue
                pages.extend(read)
                if not read:  # a PDF with 0 pages: reported, as a local run does
                    failed.append(self._failure(path, NO_PAGES))
        tables = {part: out.tables(sinks[part].blocks) for part, out in self.outputs.items()}
        # a page the classifier gave no row (a page) or rows (its words) is reported
        classified = {page for block in sinks[""].blocks for page in block.columns["image_id"]}
        extra = [{**self._page_columns(meta), STATUS: NO_WORDS}
                 for meta in pages if meta["image_id"] not in classified]  # fmt: skip
        if extra or failed:
            schema = tables[""][0].schema if tables[""] else self.schema
            tables[""].append(pa.Table.from_pylist([*extra, *failed], schema=schema))
        return pack({part: join(found) for part, found in tables.items() if found})

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
