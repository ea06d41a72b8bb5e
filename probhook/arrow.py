"""Files of rows: Arrow IPC streams as a capture writes them, Parquet, and reading any of them
back (the Arrow form of rows itself is [`probhook.arrow_rows`][probhook.arrow_rows]'s).

A stream is one or more *segments*, each an Arrow IPC stream of its own (a schema message,
record batches, the end-of-stream marker): a block whose values do not fit the segment's schema
(int keys after text keys, say) ends it and starts the next with a widened schema
([`StreamSchema`][StreamSchema]). A finished stream ends in the marker; one without it was cut
short (a killed run, or one still writing). Reading unifies the segments (one encoding per
column, JSON where they differ); converting to Parquet does so in bounded batches.

Examples:
    >>> import numpy as np, os, tempfile
    >>> from probhook import ProbBuffer, load
    >>> from probhook.sink import FileSink
    >>> path = os.path.join(tempfile.mkdtemp(), "keys.arrows")
    >>> sink = FileSink(path)
    >>> buf = ProbBuffer(2, 10, sink=sink)
    >>> buf.append_batch(np.float32([[0.9, 0.1]]))  # no key
    >>> buf.append_batch(np.float32([[0.2, 0.8]]), keys=[7])  # an int: a new segment
    >>> buf.append_batch(np.float32([[0.5, 0.5]]), keys=["x"])  # text after ints: JSON
    >>> sink.close()
    >>> load(path).keys
    [None, 7, 'x']
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probhook._extras import require
from probhook.arrow_folder import folder_files
from probhook.arrow_rows import (
    TEXT,
    conform,
    derived_columns,
    rows_to_arrow,
    table_meta,
    unified_encodings,
    value_encoding,
)
from probhook.block import ColumnKind, RowBlock

if TYPE_CHECKING:
    import pyarrow as pa

STREAM_SUFFIXES = (".arrows", ".arrow", ".ipc")
"""Suffixes of Arrow IPC stream files (everything else is read as Parquet)."""
PARTIAL = ".partial.arrows"
"""Suffix of the stream a sink writes until it is closed."""
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
"""The Arrow stream format's end marker (a continuation token and a zero length)."""
PARQUET_ROWS = 65_536
"""Rows per Parquet row group when a stream is converted: memory stays bounded by it."""


def stream_path(path: Path) -> Path:
    """Where rows bound for ``path`` are streamed while a capture runs."""
    return path.with_name(path.name + PARTIAL)


class StreamSchema:
    """The schema of the segment a stream is writing, and which value columns have held a
    value anywhere in the file (those can only widen to JSON; the others may take any type)."""

    def __init__(self) -> None:
        self.schema: Any = None
        self.encodings: dict[str, str] = {}  # value columns not stored as text
        self.valued: set[str] = set()
        self.segments = 0

    def encode(self, rows: RowBlock, *, first: bool) -> tuple[bytes, tuple[Any, ...]]:
        """The bytes that append ``rows`` (a new segment's marker and schema first, when they
        do not fit), and the state to [`commit`][commit] once those bytes are written."""
        kinds = rows.kinds
        needed = {n: value_encoding(rows.columns[n]) for n, k in kinds.items() if k == "str"}
        enc = dict(self.encodings)
        for name, want in needed.items():
            have = enc.get(name, TEXT) if self.schema is not None else None
            if want is None or want == have or have == "json":
                continue
            enc[name] = "json" if name in self.valued else want
        enc = {n: e for n, e in enc.items() if e != TEXT}
        table = rows_to_arrow(rows, kinds, derived=False,
                              encodings={n: enc.get(n, TEXT) for n in needed})  # fmt: skip
        new = (
            self.schema is None
            or enc != self.encodings
            or not table.schema.equals(self.schema, check_metadata=False)
        )
        parts: list[Any] = []
        if new:
            parts += [] if first else [END_OF_STREAM]
            parts.append(table.schema.serialize())
        parts += [batch.serialize() for batch in table.to_batches()]
        valued = self.valued | {n for n, e in needed.items() if e is not None}
        state = (table.schema if new else self.schema, enc, valued, self.segments + new)
        return b"".join(memoryview(p) for p in parts), state

    def commit(self, state: tuple[Any, ...]) -> None:
        """The bytes of [`encode`][encode] are in the file."""
        self.schema, self.encodings, self.valued, self.segments = state


class StreamReader:
    """Iterates ``(segment, record batch)`` over a stream file; afterwards ``schemas`` holds
    each segment's schema, ``ended`` whether the last one ends in the marker, ``damage`` the
    error of a torn last message."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.schemas: list[Any] = []
        self.ended = False
        self.damage: Exception | None = None

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa

        with pa.OSFile(os.fspath(self.path), "rb") as f:
            while f.tell() < self.size:
                try:
                    reader = pa.ipc.open_stream(f)
                except (pa.ArrowInvalid, OSError) as err:
                    if not self.schemas:
                        raise ValueError(
                            f"{self.path} is not an Arrow stream written by probhook ({err}); "
                            "no rows recovered"
                        ) from None
                    self.damage = err
                    return
                self.schemas.append(reader.schema)
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    except (pa.ArrowInvalid, OSError) as err:  # torn: the writer was killed
                        self.damage = err
                        return
                    yield len(self.schemas) - 1, batch
                end = f.tell()
                f.seek(max(0, end - len(END_OF_STREAM)))
                self.ended = f.read(len(END_OF_STREAM)) == END_OF_STREAM
                f.seek(end)
                if not self.ended:
                    return


def _schema_of(meta: Mapping[str, str]) -> dict[str, ColumnKind]:
    columns: dict[str, ColumnKind] = json.loads(meta.get("probhook.columns", "{}"))
    return columns


def _segment_encodings(schema: Any) -> dict[str, str]:
    encodings: dict[str, str] = json.loads(table_meta(schema).get("probhook.encodings", "{}"))
    return encodings


def read_stream(path: str | os.PathLike[str], *, strict: bool = False) -> pa.Table | None:
    """Every complete block of a stream as one table (None: an empty file). A stream cut short
    warns with the number of rows recovered (``strict=True`` raises instead)."""
    import pyarrow as pa

    reader = StreamReader(path)
    if not reader.size:
        return None
    batches: dict[int, list[Any]] = {}
    for segment, batch in reader:
        batches.setdefault(segment, []).append(batch)
    tables = [pa.Table.from_batches(batches.get(i, []), schema=s)
              for i, s in enumerate(reader.schemas)]  # fmt: skip
    table = unify(tables)
    blocks = sum(len(b) for b in batches.values())
    if reader.damage is not None:
        message = (f"{path} ends in an incomplete block ({reader.damage}): {table.num_rows} rows "
                   f"in {blocks} complete blocks were recovered")  # fmt: skip
    elif not reader.ended:
        message = (f"{path} has no end-of-stream marker: {_unfinished(Path(path))}; its "
                   f"{table.num_rows} rows in {blocks} complete blocks were read")  # fmt: skip
    else:
        return table
    if strict:
        raise ValueError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return table


def unify(tables: list[Any]) -> Any:
    """The segments of one stream as one table: value columns in one encoding."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    meta = table_meta(tables[-1].schema)
    schema = _schema_of(meta)
    target = unified_encodings(schema, [(_segment_encodings(t.schema), _valued(t, schema))
                                        for t in tables])  # fmt: skip
    meta["probhook.encodings"] = json.dumps(target)
    out = [conform(t, schema, _segment_encodings(t.schema), target).replace_schema_metadata(meta)
           for t in tables]  # fmt: skip
    return pa.concat_tables(out)


def _valued(table: Any, schema: Mapping[str, ColumnKind]) -> set[str]:
    return {n for n, k in schema.items() if k == "str" and table.column(n).null_count < len(table)}


def _unfinished(stream: Path) -> str:
    """Whether the capture writing ``stream`` is still running or was killed (a running one
    holds its lock)."""
    import fcntl

    try:
        fd = os.open(stream, os.O_RDONLY)
    except OSError:
        return "the run that wrote it was killed"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "a capture is still writing it"
    finally:
        os.close(fd)
    return "the run that wrote it was killed"


def stream_target(stream: str | os.PathLike[str]) -> dict[str, str]:
    """The encodings that hold every segment's values of a stream (read through once)."""
    reader = StreamReader(stream)
    valued: dict[int, set[str]] = {}
    for segment, batch in reader:
        schema = _schema_of(table_meta(reader.schemas[segment]))
        valued.setdefault(segment, set()).update(_valued(batch, schema))
    if not reader.schemas:
        return {}
    return unified_encodings(
        _schema_of(table_meta(reader.schemas[-1])),
        [(_segment_encodings(s), valued.get(i, set())) for i, s in enumerate(reader.schemas)],
    )


def stream_tables(
    reader: StreamReader, target: Mapping[str, str], columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """The stream's record batches as tables of one schema: value columns in the ``target``
    encodings (named in the metadata), only ``columns`` when given."""
    import pyarrow as pa

    for segment, batch in reader:
        meta = table_meta(reader.schemas[segment])
        table = pa.Table.from_batches([batch])
        table = conform(table, _schema_of(meta), _segment_encodings(reader.schemas[segment]),
                        target)  # fmt: skip
        meta["probhook.encodings"] = json.dumps(dict(target))
        if columns is not None:
            table = table.select(columns)
        yield table.replace_schema_metadata(meta)


def write_parquet(
    stream: str | os.PathLike[str], out: str | os.PathLike[str],
    target: Mapping[str, str] | None = None,
) -> None:  # fmt: skip
    """Convert a finished stream to Parquet with the derived columns, ``PARQUET_ROWS`` at a
    time; ``target``: the value columns' encodings (default: read from the stream first)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = StreamReader(stream)
    writer, waiting = None, []
    try:
        for table in stream_tables(reader, stream_target(stream) if target is None else target):
            labels = tuple(json.loads(table_meta(table.schema)["probhook.labels"]))
            probs = np.column_stack([table.column(f"p_{x}").to_numpy() for x in labels]
                                    or [np.zeros((len(table), 0))])  # fmt: skip
            finite = table.column("finite").to_numpy(zero_copy_only=False)
            at = table.schema.get_field_index("finite") + 1
            derived = derived_columns(probs, finite, labels)
            for offset, (name, values) in enumerate(derived.items()):
                array = values if isinstance(values, pa.Array) else pa.array(values)
                table = table.add_column(at + offset, name, array)
            if writer is None:
                writer = pq.ParquetWriter(os.fspath(out), table.schema)
            waiting.append(table)
            if sum(len(t) for t in waiting) >= PARQUET_ROWS:
                writer.write_table(pa.concat_tables(waiting), row_group_size=PARQUET_ROWS)
                waiting = []
        if reader.damage is not None or not reader.ended:
            raise ValueError(f"{stream} is not a finished stream: it cannot become {out}")
        if waiting:
            assert writer is not None
            writer.write_table(pa.concat_tables(waiting), row_group_size=PARQUET_ROWS)
    finally:
        if writer is not None:
            writer.close()


def resolve(path: Path, *, strict: bool = False) -> Path:
    """The file to read for ``path``: itself, or the partial stream of a run that did not
    finish it (with a warning saying whether that run was killed or is still writing); a
    finished file beside a later run's partial stream is read with a warning naming the
    stream. ``strict=True`` raises instead of each warning."""
    partial = stream_path(path)
    if path.name.endswith(PARTIAL) or not partial.exists():
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        return path
    if path.exists():
        message = (f"{path} was written by an earlier run: a later run left its rows in "
                   f"{partial.name} ({_unfinished(partial)}); load that file to read "
                   "them")  # fmt: skip
    else:
        message = (f"{path} was never finished ({_unfinished(partial)}); reading the rows it "
                   f"streamed to {partial.name}")  # fmt: skip
        path = partial
    if strict:
        raise ValueError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return path


def is_stream(path: Path) -> bool:
    """Whether ``path`` is read as an Arrow stream (else as Parquet)."""
    return path.suffix in STREAM_SUFFIXES or path.name.endswith(PARTIAL)


def read_table(path: str | os.PathLike[str], *, strict: bool = False) -> pa.Table | None:
    """Read a ``.parquet`` file, a folder of them ([`read_folder`][read_folder]) or a stream
    (None: an empty stream, with no row yet), whichever [`resolve`][resolve] says to read.
    Anything unreadable raises a ``ValueError`` naming the file."""
    require("pyarrow", "parquet", "reading a Parquet or Arrow file (probhook.load)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        return read_folder(path, strict=strict)
    path = resolve(path, strict=strict)
    if is_stream(path):
        return read_stream(path, strict=strict)
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(
            f"{path} is not a readable Parquet file ({err}); no rows recovered. A run killed "
            f"while writing Parquet leaves its rows in the {PARTIAL} file beside it"
        ) from None


def read_folder(path: str | os.PathLike[str], *, strict: bool = False) -> pa.Table:
    """The rows of a folder of Parquet files written by several writers (Ray workers, say): one
    label space across files, only rows whose ``status`` (where there is one) is ``"ok"``, and
    sequence numbers renumbered in reading order (each writer numbered its own rows); which
    files, and which warnings: ``probhook.arrow_folder.folder_files``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    parquet = folder_files(Path(path), strict=strict)
    try:
        dataset = pds.dataset(parquet, format="parquet")
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(
            f"{os.fspath(path)} holds a file that is not readable Parquet: {err}"
        ) from None
    metadata = [f.physical_schema.metadata or {} for f in dataset.get_fragments()]
    labels = {m.get(b"probhook.labels") for m in metadata}
    if len(labels) != 1:
        raise ValueError(f"the files in {os.fspath(path)} hold different label spaces: "
                         f"{sorted(str(x) for x in labels)}; load them one by one")  # fmt: skip
    table = dataset.to_table()
    if "status" in table.column_names:
        table = table.filter(pc.equal(table.column("status"), "ok"))
    seq = pa.array(np.arange(len(table), dtype=np.int64))
    table = table.set_column(table.column_names.index("seq"), "seq", seq)
    return table.replace_schema_metadata(metadata[0])
