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

from probhook.arrow import STREAM_SUFFIXES, rows_to_arrow, stream_path
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


class SinkError(RuntimeError):
    """Rows could not be written to a sink; they are kept (queued, or still in memory) and
    written again at the next write, flush or close."""


def write_to_sink(sink: Sink, rows: RowBlock) -> None:
    """``sink.write(rows)``, with a failure turned into a [`SinkError`][SinkError] naming the
    rows."""
    try:
        sink.write(rows)
    except Exception as err:
        seq = rows.seq
        span = f" (seq {int(seq[0])}..{int(seq[-1])})" if len(seq) else ""
        raise SinkError(
            f"{len(rows)} rows{span} could not be written to {sink!r}: "
            f"{type(err).__name__}: {err}; they are kept and written again at the next write, "
            "flush or close"
        ) from err


class FileSink:
    """A [`Sink`][Sink] writing rows to an ``.arrows`` Arrow IPC stream, or to ``.parquet``.

    Every block is appended to an Arrow stream and flushed to the operating system at once, so
    a killed process leaves a file whose complete blocks all read back. For ``.parquet`` the
    stream is ``<name>.parquet.partial.arrows`` beside it while the capture runs; [`close`][close]
    converts it into the Parquet file and removes it (``probhook.load("x.parquet")`` reads the
    partial stream of a run that was killed). Rows of a second head (another label space) go
    to ``<stem>.<head><suffix>`` beside the first.

    The path is checked when the sink is made: its folder is created and the file opened, so
    an unwritable place fails before any row is captured.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_sink_target(path)  # suffix, and pyarrow (naming its extra): fail now, not at close
        if self.path.is_dir():
            raise IsADirectoryError(f"sink path {os.fspath(path)!r} is a folder, not a file")

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._streams: dict[str, tuple[Any, Path]] = {}  # head -> handle, stream
        self.paths: dict[str, Path] = {}
        self.closed = False
        self._open("", self.path)  # checked now; the schema comes with the first block

    def _open(self, head: str, path: Path) -> None:
        stream = stream_path(path)
        # unbuffered: a failed write leaves no bytes behind in a buffer to reach the file later
        handle = open(stream, "wb", buffering=0)  # noqa: SIM115  (closed in close())
        self._streams[head] = (handle, stream)
        self.paths[head] = path

    def write(self, rows: RowBlock) -> None:
        """Append ``rows`` to the stream of their head, flushed to the operating system.

        A block reaches the file whole or not at all: a failed write (a full disk) is cut
        off the file again, so the stream stays readable and the retry adds the rows once.
        """
        if self.closed:  # reopening would overwrite the finished file
            raise RuntimeError(f"the sink writing {self.path} is closed; start a new capture")
        heads = rows.columns["head"]
        head = str(heads[0]) if len(heads) else ""
        kinds: dict[str, ColumnKind] = {
            n: "int" if v.dtype.kind == "i" else "str" for n, v in rows.columns.items()
        }
        table = rows_to_arrow(rows, kinds, derived=False)
        if head not in self._streams:
            if "" in self._streams:  # the first head takes the file opened at start
                self._streams[head] = self._streams.pop("")
                self.paths[head] = self.paths.pop("")
            else:
                self._open(head, self._sibling(head))
        handle, _ = self._streams[head]
        # the Arrow stream format: the schema message once, then one message per batch
        parts = [table.schema.serialize()] if handle.tell() == 0 else []
        parts += [batch.serialize() for batch in table.to_batches()]
        _append(handle, b"".join(memoryview(p) for p in parts))

    def _sibling(self, head: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in head)
        return self.path.with_name(f"{self.path.stem}.{safe}{self.path.suffix}")

    def close(self) -> None:
        """Finish every file (Parquet is written here). Safe to call again after a failure:
        what was not finished is finished then."""
        import pyarrow.parquet as pq

        from probhook.arrow import read_table

        for head in list(self._streams):
            handle, stream = self._streams[head]
            if not handle.closed:
                if handle.tell():
                    _append(handle, END_OF_STREAM)
                handle.close()
            path = self.paths[head]
            if stream != path:
                if stream.stat().st_size:
                    # written beside and renamed: a kill or a full disk here leaves no torn
                    # Parquet file, and the stream stays until the Parquet file is complete
                    part = path.with_name(path.name + ".tmp")
                    try:
                        pq.write_table(read_table(stream), part)
                    except BaseException:
                        part.unlink(missing_ok=True)
                        raise
                    os.replace(part, path)
                stream.unlink()
            del self._streams[head]
        self.closed = True

    def __repr__(self) -> str:
        return f"FileSink({os.fspath(self.path)!r})"


END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
"""The Arrow stream format's end marker (a continuation token and a zero length)."""


def _append(handle: Any, data: bytes) -> None:
    """Write all of ``data`` at the end of the unbuffered ``handle``, or none of it: on a
    failure the file is cut back to where it ended, and the error raised."""
    end = handle.tell()
    view = memoryview(data)
    try:
        while view:
            view = view[handle.write(view) :]
    except BaseException:
        handle.truncate(end)
        handle.seek(end)
        raise


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
