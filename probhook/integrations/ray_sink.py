"""Writing a Ray run: the datasink that puts each output's rows in its own folder (``out`` for
the classifier's, ``<out>.<part>`` beside it for each detector's: see
[`folder_of`][probhook.integrations.ray_worker.folder_of]), one Parquet file per output and
write task, written where the task runs."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from typing import Any

from probhook.arrow_folder import UNFINISHED
from probhook.integrations.ray_worker import folder_of, unpack


class RowsWriter:
    """Unpacks each block of a run's packed rows and writes each output's rows to its folder
    (a local path or a URI pyarrow opens, such as ``s3://bucket/run``). A file is written under
    a hidden name and renamed into place: a folder holds whole files only, and a write task
    that runs again writes the same file names again (no row twice). Each folder holds the mark
    ``.probhook-unfinished`` until every write task is done: a killed run's folders read with
    a warning, never as a whole run. Ray's ``Datasink`` base is added by
    [`rows_datasink`][rows_datasink], so that Ray is imported only to write."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = os.fspath(out)
        self.run = uuid.uuid4().hex[:12]  # this run's files, apart from any other run's
        self.parts: set[str] = set()  # the outputs that got rows

    def on_write_start(self, schema: Any = None) -> None:
        """Mark ``out`` unfinished before any file is written (on the driver)."""
        mark(self.out)

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[str]:
        """Write the blocks of one write task; returns the outputs it wrote rows of."""
        import pyarrow as pa
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        if not tables:
            return []
        found = unpack(pa.concat_tables(tables))
        for part, table in found.items():
            mark(folder_of(self.out, part))
            write_file(table, folder_of(self.out, part), f"{self.run}_{ctx.task_idx:06d}.parquet")
        return list(found)

    def on_write_complete(self, write_result: Any) -> None:
        """Note which outputs got rows (on the driver, once every write task is done)."""
        for parts in write_result.write_returns:
            self.parts.update(parts)
        for part in {"", *self.parts}:
            fs, base = _filesystem(folder_of(self.out, part))
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(f"{base}/{UNFINISHED}")


def rows_datasink(out: str | os.PathLike[str]) -> Any:
    """A Ray ``Datasink`` (for ``Dataset.write_datasink``) that writes as
    [`RowsWriter`][RowsWriter] does."""
    from ray.data import Datasink

    return type("RowsDatasink", (RowsWriter, Datasink), {})(out)


def _filesystem(folder: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in folder:
        fs, base = pafs.FileSystem.from_uri(folder)
        return fs, base
    return pafs.LocalFileSystem(), os.path.abspath(folder)


def mark(folder: str) -> None:
    """Make ``folder`` (if missing) and mark it unfinished."""
    fs, base = _filesystem(folder)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(f"{base}/{UNFINISHED}") as f:
        f.write(b"a probhook Ray run is writing this folder (or was killed)\n")


def write_file(table: Any, folder: str, name: str) -> None:
    """``table`` as the Parquet file ``name`` in ``folder`` (made if missing), put in place
    whole with one rename."""
    import pyarrow.parquet as pq

    fs, base = _filesystem(folder)
    fs.create_dir(base, recursive=True)
    partial = f"{base}/.{name}.partial"  # hidden: probhook.load skips it
    pq.write_table(table, partial, filesystem=fs)
    fs.move(partial, f"{base}/{name}")
