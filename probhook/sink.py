"""Where rows go beyond the ring buffer: the [`Sink`][Sink] protocol and its file implementation.

Examples:
    >>> import numpy as np, os, tempfile
    >>> from probhook import ProbBuffer, load
    >>> from probhook.sink import FileSink
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.arrows")
    >>> sink = FileSink(path)
    >>> buf = ProbBuffer(2, 1, labels=["no", "yes"], on_overflow="spill", sink=sink)
    >>> buf.append_batch(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), keys=["a", "b"])
    >>> buf.flush(); sink.close()
    >>> load(path).keys
    ['a', 'b']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from probhook.arrow import STREAM_SUFFIXES, rows_to_arrow
from probhook.block import ColumnKind, RowBlock


@runtime_checkable
class Sink(Protocol):
    """Where rows go before the ring buffer overwrites them (``on_overflow="spill"``).

    ``write`` receives blocks in sequence order, each row exactly once; ``close`` is called once
    by the owner when no more rows will come.
    """

    def write(self, rows: RowBlock) -> None:
        """Receive the next block of rows (oldest first)."""

    def close(self) -> None:
        """No more rows will come: finish and release the destination."""


class FileSink:
    """A [`Sink`][Sink] writing rows to ``.parquet`` (one row group per block) or ``.arrows``
    (Arrow IPC stream, flushed per block, readable after a crash).

    Rows of a second head (another label space) go to ``<stem>.<head><suffix>`` beside it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_sink_target(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, tuple[Any, Any]] = {}
        self.paths: dict[str, Path] = {}
        self.closed = False

    def write(self, rows: RowBlock) -> None:
        """Append ``rows`` to the file of their head (opened at its first block)."""
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
        """Finish every file (Parquet writes its footer here)."""
        for writer, handle in self._writers.values():
            writer.close()
            if handle is not None:
                handle.close()
        self._writers.clear()
        self.closed = True


def open_sink(sink: Any) -> Sink:
    """A sink object as given, or a [`FileSink`][FileSink] for a path."""
    if isinstance(sink, (str, os.PathLike)):
        return FileSink(sink)
    if isinstance(sink, Sink):
        return sink
    raise TypeError(f"sink= must be a path or an object with write(rows) and close(), got {sink!r}")


def check_sink_target(sink: Any) -> None:
    """Fail when the capture is created, not at its first row: a sink path must end in
    ``.parquet`` or ``.arrows`` and needs pyarrow (``probhook[parquet]``); a sink object needs
    ``write`` and ``close``."""
    if isinstance(sink, (str, os.PathLike)):
        if Path(sink).suffix not in (".parquet", *STREAM_SUFFIXES):
            raise ValueError(
                f"sink path {os.fspath(sink)!r} must end in .parquet or .arrows (Arrow IPC stream)"
            )
        from probhook._extras import require

        require("pyarrow", "parquet", f"sink={os.fspath(sink)!r}")
    elif not (callable(getattr(sink, "write", None)) and callable(getattr(sink, "close", None))):
        raise TypeError(
            f"sink= must be a path or an object with write(rows) and close(), got {sink!r}"
        )
