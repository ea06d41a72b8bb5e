"""One pass over the rows of a head, chunk by chunk, wherever they are: a capture (or one of its
heads), a [`load`][probhook.load]ed file, or Parquet / Arrow files and folders of them read batch
by batch with pyarrow, so that a run of millions of rows is never loaded whole.

A *run* on disk is one file, a folder of Parquet files (``probhook run --engine ray``: only rows
whose ``status`` is ``"ok"``), or a sink's files: ``run.parquet`` for the first head and
``run.<head>.parquet`` beside it for each further head (see
[`FileSink`][probhook.sink.FileSink]).

Examples:
    >>> import numpy as np
    >>> from probhook import ProbBuffer
    >>> from probhook.head_view import HeadView
    >>> view = HeadView("clf", buffer=ProbBuffer(2, 10, labels=["no", "yes"]))
    >>> view.buffer.append_batch(np.array([[0.9, 0.1], [0.3, 0.7]]), keys=["a", "b"])
    >>> rows = open_rows(view)
    >>> rows.labels, [len(c.probs) for c in rows.chunks(["key"])]
    (('no', 'yes'), [2])
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook._extras import require
from probhook.chunk import Chunk, Columns, Factorized, factorize, of_arrays

if TYPE_CHECKING:
    import pyarrow as pa

CHUNK_ROWS = 1 << 19
"""Rows read at a time from files (about 8 MB of float32 probabilities for 4 classes)."""


@dataclass(frozen=True)
class Rows:
    """A head's rows, ready to be read in chunks: ``name``, ``labels``, the metadata ``columns``
    there are, and ``origin`` (the file or head, for messages)."""

    name: str
    labels: tuple[str, ...]
    columns: tuple[str, ...]
    origin: str
    _read: Callable[[list[str]], Iterator[Chunk]]

    def chunks(self, columns: Sequence[str] = ()) -> Iterator[Chunk]:
        """The rows in chunks, oldest first, with the metadata ``columns`` asked for (a column
        the rows lack is an error naming the columns there are); element rows as
        [`probhook.row_scores`][probhook.row_scores] measures them."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise KeyError(
                f"{self.origin} has no column {missing[0]!r}; its columns: {list(self.columns)}"
            )
        from probhook.row_scores import element_chunk, measured_columns

        extra = measured_columns(self.columns)
        read = self._read(list(dict.fromkeys([*columns, *extra])))
        return (element_chunk(c) for c in read) if extra else read


def open_rows(source: Any) -> Rows:
    """``source`` as [`Rows`][Rows]: a capture with one head, a head, a loaded file, an ``(n, C)``
    array, or the path of a file or folder (one head; see [`run_heads`][run_heads] for runs with
    several)."""
    if isinstance(source, Rows):
        return source
    if isinstance(source, (str, os.PathLike)):
        heads = run_heads(source)
        if len(heads) > 1:
            raise ValueError(
                f"{os.fspath(source)} is a run of {len(heads)} heads ({', '.join(heads)}); "
                "pass one head's file"
            )
        return next(iter(heads.values()))
    if hasattr(source, "heads") and hasattr(source, "head"):  # a capture: its single head
        source = source.head
    if hasattr(source, "rows") and hasattr(source, "labels"):
        return _of_view(source)
    probs = np.asarray(source, dtype=np.float64)
    if probs.ndim != 2:
        raise TypeError(
            "expected a capture, a head, a loaded file, a path or (n, classes) probabilities; "
            f"got {type(source).__name__} of shape {probs.shape}"
        )
    labels = tuple(str(i) for i in range(probs.shape[1]))
    return Rows("rows", labels, (), "the probabilities",
                lambda _: iter([Chunk(probs, of_arrays({}))]))  # fmt: skip


def _of_view(view: Any) -> Rows:
    def read(columns: list[str]) -> Iterator[Chunk]:
        block = view.rows()
        for start in range(0, max(len(block), 1), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            arrays = {c: block.columns[c][start:stop] for c in columns}
            yield Chunk(block.probs[start:stop], of_arrays(arrays))

    name = str(view.name)
    return Rows(name, tuple(view.labels), tuple(view.schema), f"head {name!r}", read)


class EmptyRunError(ValueError):
    """The run holds no rows at all."""


def run_heads(path: str | os.PathLike[str]) -> dict[str, Rows]:
    """The heads of a run on disk by name: a file and the sibling files a sink wrote for further
    heads (``run.parquet``, ``run.<head>.parquet``), or a folder of Parquet files and the
    sibling folders of further heads (``probhook run --engine ray``: ``run/``,
    ``run.layout/``). A head whose stream holds no row yet (a run killed early) is left out;
    [`EmptyRunError`][EmptyRunError] when no head has one."""
    require("pyarrow", "parquet", "reading a run's files")
    from probhook.arrow import stream_path

    path = Path(path)
    if not path.exists() and not stream_path(path).exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    read = _of_folder if path.is_dir() else _of_file
    heads: dict[str, Rows] = {}
    empty: list[EmptyRunError] = []
    for file in [path, *siblings(path)]:
        try:
            rows = read(file)
        except EmptyRunError as error:
            empty.append(error)
            continue
        heads.setdefault(rows.name, rows)
    if not heads and empty:
        raise empty[0]
    return heads


def siblings(path: Path) -> list[Path]:
    """``run.<head>.suffix`` beside ``run.suffix`` (the sink's files of further heads, or their
    unfinished streams ``run.<head>.suffix.partial.arrows`` after a killed run: the path of the
    file, which reading resolves), or the folders ``run.<head>`` beside the folder ``run`` (a
    Ray run's)."""
    from probhook.arrow import PARTIAL

    folder = path.is_dir()
    stem, suffix = (path.name, "") if folder else (path.stem, path.suffix)
    found = set()
    for end in [suffix] if folder else [suffix, suffix + PARTIAL]:
        for other in path.parent.glob(f"{stem}.*{end}"):
            head = other.name[len(stem) + 1 : len(other.name) - len(end)]
            file = other.with_name(f"{stem}.{head}{suffix}")
            if file != path and head and "." not in head and other.is_dir() == folder:
                found.add(file)
    return sorted(found)


def _meta(schema: pa.Schema, origin: str) -> tuple[tuple[str, ...], dict[str, str], dict[str, str]]:
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    if "probhook.labels" not in meta:
        raise ValueError(f"{origin} was not written by probhook (no probhook.labels metadata)")
    labels = tuple(json.loads(meta["probhook.labels"]))
    columns = {n: k for n, k in json.loads(meta["probhook.columns"]).items() if n in schema.names}
    return labels, columns, json.loads(meta.get("probhook.encodings", "{}"))


def _convert(batch: Any, labels: tuple[str, ...], encodings: dict[str, str]) -> Chunk:
    import pyarrow as pa

    from probhook.arrow_rows import decode_values

    probs = (
        np.column_stack(
            [batch.column(f"p_{label}").to_numpy(zero_copy_only=False) for label in labels]
        )
        if labels
        else np.zeros((batch.num_rows, 0))
    )
    names = [n for n in batch.schema.names if n not in {f"p_{x}" for x in labels} | {"status"}]

    def convert(name: str, rows: Any) -> npt.NDArray[Any]:
        col = batch.column(name) if rows is None else batch.column(name).take(rows)
        if encodings.get(name) == "json":
            return decode_values(col.to_pylist(), "json")
        return np.asarray(col.to_numpy(zero_copy_only=False))

    def encode(name: str) -> Factorized:
        if encodings.get(name) == "json" or not pa.types.is_string(batch.column(name).type):
            return factorize(convert(name, None))
        encoded = batch.column(name).dictionary_encode()
        values = encoded.dictionary.to_pylist()
        if encoded.indices.null_count:  # rows without a value: the group None
            values.append(None)
        codes = encoded.indices.fill_null(len(values) - 1).to_numpy().astype(np.int64)
        return Factorized(codes, values)

    return Chunk(probs.reshape(batch.num_rows, len(labels)), Columns(convert, names, encode))


def _wanted(labels: tuple[str, ...], columns: list[str]) -> list[str]:
    return [*columns, *(f"p_{label}" for label in labels)]


def _parquet_head(path: Path, fallback: str) -> str:
    """The head a Parquet file's rows belong to: from the first row group's statistics when
    they name one head (nothing read), else from its first row."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    meta = file.metadata
    if meta.num_row_groups:
        column = meta.row_group(0).column(meta.schema.names.index("head"))
        stats = column.statistics
        if stats is not None and stats.has_min_max and stats.min == stats.max:
            return str(stats.min)
    return _head_name(next(file.iter_batches(1, columns=["head"]), None), fallback)


def _head_name(first: Any, fallback: str) -> str:
    if first is None:
        return fallback
    heads = first.column("head").to_pylist() if "head" in first.schema.names else []
    return str(heads[0]) if heads and heads[0] is not None else fallback


def _of_file(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from probhook.arrow import (
        PARTIAL,
        StreamReader,
        is_stream,
        resolve,
        stream_tables,
        stream_target,
    )

    given = path.name[: -len(PARTIAL)] if path.name.endswith(PARTIAL) else path.name
    stem = Path(given).stem  # a head without a name: the file's, not its stream's
    path = resolve(path)  # an unfinished run: its partial stream, said so
    if is_stream(path):
        target = stream_target(path)  # one encoding per column over the stream's segments
        reader = StreamReader(path)
        first = next(stream_tables(reader, target), None)
        if first is None:
            raise EmptyRunError(f"{path} holds no row (its capture wrote none)")
        labels, kinds, encodings = _meta(first.schema, os.fspath(path))

        def read_stream(columns: list[str]) -> Iterator[Chunk]:
            reader = StreamReader(path)
            for table in stream_tables(reader, target, _wanted(labels, columns)):
                yield _convert(table, labels, encodings)
            if reader.damage is not None:  # a torn last block, as a killed writer leaves it
                warnings.warn(f"{path} ends in an incomplete block ({reader.damage}); it was "
                              "skipped", RuntimeWarning, stacklevel=2)  # fmt: skip

        name = _head_name(first, stem)
        return Rows(name, labels, tuple(kinds), os.fspath(path), read_stream)
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path} is not a readable Parquet file ({err})") from None
    labels, kinds, encodings = _meta(file.schema_arrow, os.fspath(path))

    def read_parquet(columns: list[str]) -> Iterator[Chunk]:
        wanted = _wanted(labels, columns)
        for batch in pq.ParquetFile(path).iter_batches(CHUNK_ROWS, columns=wanted):
            yield _convert(batch, labels, encodings)

    name = _parquet_head(path, path.stem) if "head" in kinds else path.stem
    return Rows(name, labels, tuple(kinds), os.fspath(path), read_parquet)


def _of_folder(path: Path) -> Rows:
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    from probhook.arrow_folder import folder_files

    folder = pds.dataset(folder_files(path), format="parquet")
    spaces = {f.physical_schema.metadata.get(b"probhook.labels") for f in folder.get_fragments()}
    if len(spaces) != 1:
        raise ValueError(
            f"the files in {path} hold different label spaces: "
            f"{sorted(str(s) for s in spaces)}; read them one by one"
        )
    schema = next(folder.get_fragments()).physical_schema
    labels, kinds, encodings = _meta(schema, os.fspath(path))
    ok = pc.field("status") == "ok" if "status" in schema.names else None

    def read_folder(columns: list[str]) -> Iterator[Chunk]:
        scan = folder.to_batches(  # little read-ahead: memory stays at a few chunks
            columns=_wanted(labels, columns), filter=ok, batch_size=CHUNK_ROWS,
            batch_readahead=1, fragment_readahead=1,
        )  # fmt: skip
        for batch in scan:
            if batch.num_rows:
                yield _convert(batch, labels, encodings)

    name = _parquet_head(Path(folder.files[0]), path.name) if "head" in kinds else path.name
    return Rows(name, labels, tuple(kinds), os.fspath(path), read_folder)


def same_labels(
    reference: Sequence[str], current: Sequence[str], what: str = "the reference"
) -> None:
    """Refuse rows of different classifiers: another label space, or the same labels in
    another column order (``what`` names the first rows in the message)."""
    if tuple(reference) == tuple(current):
        return
    only_ref = sorted(set(reference) - set(current))
    only_cur = sorted(set(current) - set(reference))
    detail = (
        f"only in {what}: {only_ref}; only in the current run: {only_cur}"
        if only_ref or only_cur
        else "the same labels in another column order"
    )
    raise ValueError(
        f"{what} has labels {list(reference)}, the current run "
        f"{list(current)} ({detail}): use rows of the same classifier"
    )
