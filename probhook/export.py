"""Lossless export: pandas, Arrow, Parquet, streaming file sinks, and :func:`load`.

One row per captured row: ``seq``, ``head``, ``key``, the page columns, ``finite``, derived
``predicted`` / ``confidence`` / ``margin`` / ``entropy``, and one ``p_<label>`` column per
class (``logit_<label>`` too when logits were kept). Labels and column kinds travel in the
schema metadata, so :func:`load` restores the same read interface.

>>> import numpy as np, tempfile, os
>>> from probhook import ProbBuffer, load
>>> from probhook.views import HeadView
>>> view = HeadView("clf")
>>> view.buffer = ProbBuffer(2, 4, labels=["no", "yes"])
>>> view.buffer.append_batch(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), keys=["a", "b"])
>>> path = view.to_parquet(os.path.join(tempfile.mkdtemp(), "run.parquet"))
>>> load(path).get("b").predicted
'yes'

Streaming sinks: ``.arrows`` (Arrow IPC stream) survives a killed process: every batch written
before the kill reads back. ``.parquet`` is complete only once the capture is closed (Parquet's
footer is written last).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from probhook.buffer import ProbBuffer
from probhook.rows import INT_NA, ColumnKind, Rows, Sink

if TYPE_CHECKING:
    import pyarrow as pa

    from probhook.views import HeadView

STREAM_SUFFIXES = (".arrows", ".arrow", ".ipc")


def rows_to_arrow(rows: Rows, schema: dict[str, ColumnKind], *, derived: bool = True) -> pa.Table:
    """An Arrow table of ``rows``; ``schema`` gives the kind of each metadata column."""
    import pyarrow as pa

    from probhook import metrics

    data: dict[str, Any] = {"seq": pa.array(rows.seq, pa.int64())}
    for name, kind in schema.items():
        values = rows.columns[name]
        if kind == "int":
            data[name] = pa.array(values, pa.int64(), mask=values == INT_NA)
        else:
            data[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    data["finite"] = pa.array(rows.finite)
    probs = np.asarray(rows.probs)
    if derived:
        labels = np.array(rows.labels, dtype=object)
        top = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, int)
        data["predicted"] = pa.array(labels[top].tolist() if len(probs) else [], pa.string())
        data["confidence"] = metrics.max_prob(probs)
        data["margin"] = metrics.margin(probs)
        data["entropy"] = metrics.entropy(probs)
    for i, label in enumerate(rows.labels):
        data[f"p_{label}"] = probs[:, i]
    if rows.logits is not None:
        for i, label in enumerate(rows.labels):
            data[f"logit_{label}"] = rows.logits[:, i]
    meta = {
        "probhook.labels": json.dumps(list(rows.labels)),
        "probhook.columns": json.dumps(dict(schema)),
        "probhook.dtype": str(probs.dtype),
    }
    return pa.table(data).replace_schema_metadata(meta)


def view_to_arrow(view: HeadView) -> pa.Table:
    if view.buffer is None:
        raise ValueError(f"head {view.name!r} has no rows yet: nothing to export")
    return rows_to_arrow(view.buffer.rows(), view.buffer.schema)


def arrow_to_buffer(table: pa.Table) -> ProbBuffer:
    """Rebuild a buffer (capacity = row count) from a table written by probhook."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "probhook.labels" not in meta:
        raise ValueError("this table was not written by probhook (no probhook.labels metadata)")
    labels = tuple(json.loads(meta["probhook.labels"]))
    schema: dict[str, ColumnKind] = json.loads(meta["probhook.columns"])
    probs = np.column_stack([table.column(f"p_{label}").to_numpy() for label in labels])
    logit_names = [f"logit_{label}" for label in labels]
    logits = None
    if all(n in table.column_names for n in logit_names):
        logits = np.column_stack([table.column(n).to_numpy() for n in logit_names]).astype(
            np.float32
        )
    columns = {}
    for name, kind in schema.items():
        col = table.column(name)
        if kind == "int":
            columns[name] = col.fill_null(INT_NA).to_numpy().astype(np.int64)
        else:
            columns[name] = np.array(col.to_pylist(), dtype=object)
    rows = Rows(
        probs.reshape(len(table), len(labels)),
        table.column("seq").to_numpy().astype(np.int64),
        table.column("finite").to_numpy(zero_copy_only=False).astype(bool),
        columns,
        labels,
        logits,
    )
    return ProbBuffer.from_rows(rows, schema, dtype=meta.get("probhook.dtype", "float32"))


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """Read a ``.parquet`` file or an Arrow IPC stream; a stream cut short by a killed writer
    yields every batch that was completely written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix not in STREAM_SUFFIXES:
        return pq.read_table(path)
    batches = []
    with pa.OSFile(os.fspath(path), "rb") as f:
        reader = pa.ipc.open_stream(f)
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):  # torn last message: the writer was killed
                break
        return pa.Table.from_batches(batches, schema=reader.schema)


def load(path: str | os.PathLike[str]) -> HeadView:
    """Read a file written by ``to_parquet`` or a streaming sink back into a read-only view.

    For a multi-head capture the sink writes one file per head (see :class:`FileSink`).
    """
    from probhook.views import HeadView

    view = HeadView(Path(path).stem)
    view.buffer = arrow_to_buffer(read_table(path))
    return view


class FileSink:
    """A :class:`~probhook.rows.Sink` writing rows to ``.parquet`` (one row group per block)
    or ``.arrows`` (Arrow IPC stream, flushed per block, readable after a crash).

    Rows of a second head (another label space) go to ``<stem>.<head><suffix>`` beside it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".parquet", *STREAM_SUFFIXES):
            raise ValueError(
                f"sink path {os.fspath(path)!r} must end in .parquet or .arrows (Arrow IPC stream)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, tuple[Any, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.closed = False

    def write(self, rows: Rows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.closed:  # reopening would overwrite the finished file
            raise RuntimeError(f"the sink writing {self.path} is closed; start a new capture")
        heads = rows.columns["head"]
        head = str(heads[0]) if len(heads) else ""
        kinds: dict[str, ColumnKind] = {
            n: "int" if v.dtype.kind == "i" else "str" for n, v in rows.columns.items()
        }
        table = rows_to_arrow(rows, kinds, derived=False)
        if head not in self._writers:
            path = self.path if not self._writers else self._sibling(head)
            if path.suffix == ".parquet":
                writer: Any = pq.ParquetWriter(path, table.schema)
                handle = None
            else:
                handle = pa.OSFile(os.fspath(path), "wb")
                writer = pa.ipc.new_stream(handle, table.schema)
            self._writers[head], self.paths[head] = (writer, handle), path
        writer, handle = self._writers[head]
        writer.write_table(table)
        if handle is not None:
            handle.flush()

    def _sibling(self, head: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in head)
        return self.path.with_name(f"{self.path.stem}.{safe}{self.path.suffix}")

    def close(self) -> None:
        for writer, handle in self._writers.values():
            writer.close()
            if handle is not None:
                handle.close()
        self._writers.clear()
        self.closed = True


def open_sink(sink: Any) -> Sink:
    """A sink object as given, or a :class:`FileSink` for a path."""
    if isinstance(sink, (str, os.PathLike)):
        return FileSink(sink)
    if isinstance(sink, Sink):
        return sink
    raise TypeError(f"sink= must be a path or an object with write(rows) and close(), got {sink!r}")
