"""Where rows go beyond the ring buffer: the [`Sink`][Sink] protocol and its file implementation.

Examples:
    >>> import numpy as np, os, tempfile
    >>> from probhook import ProbBuffer, load
    >>> from probhook.sink import FileSink
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.arrows")
    >>> sink = FileSink(path)
    >>> buf = ProbBuffer(2, 1, labels=["no", "yes"], sink=sink)
    >>> buf.append_batch(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), keys=["a", "b"])
    >>> sink.close()
    >>> load(path).keys
    ['a', 'b']
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from probhook.arrow import (
    END_OF_STREAM,
    STREAM_SUFFIXES,
    StreamSchema,
    stream_path,
    write_parquet,
)
from probhook.block import RowBlock


@runtime_checkable
class Sink(Protocol):
    """Where every row goes, written before it is stored in the ring buffer.

    ``write`` receives blocks in sequence order; ``close`` is called once by the owner when no
    more rows will come. A block interrupted while it was written (Ctrl-C) may be offered again:
    a sink skips rows whose sequence number it already has (``FileSink`` does).
    """

    def write(self, rows: RowBlock) -> None:
        """Receive the next block of rows (oldest first)."""

    def close(self) -> None:
        """No more rows will come: finish and release the destination."""


class SinkError(RuntimeError):
    """Rows could not be written to a sink; they are kept (queued, or still in memory) and
    written again at the next write, flush or close."""


class SinkBusyError(RuntimeError):
    """Another capture or ``probhook run`` is writing the path (its stream is locked)."""


class SinkReentryError(RuntimeError):
    """A sink's ``write`` read or wrote the capture it serves (it would wait for itself)."""


class SinkLostError(SinkError):
    """The sink's file is gone (its folder was removed, say): what was written to it is lost,
    and rows from now on are kept in memory only. Not tried again."""


def write_to_sink(sink: Sink, rows: RowBlock) -> None:
    """``sink.write(rows)``, with a failure turned into a [`SinkError`][SinkError] naming the
    rows."""
    try:
        sink.write(rows)
    except (SinkError, SinkReentryError):
        raise
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

    While the capture runs, rows bound for ``x.parquet`` (or ``x.arrows``) are appended to the
    stream ``x.parquet.partial.arrows`` beside it, each block flushed to the operating system
    whole or not at all, so a killed process leaves a stream whose complete blocks all read
    back. [`close`][close] ends the stream and puts the finished file in place in one rename
    (Parquet converted in bounded batches, with the derived columns): an earlier file at the
    path stays as it was until then, and stays if the run wrote no row. Rows of a second head
    (another label space) go to ``<stem>.<head><suffix>`` beside the first.

    The path is checked when the sink is made: its folder is created and the stream opened and
    locked, so an unwritable place, a second writer of the same path (in this process or
    another) and the unfinished stream of a killed run are refused before any row is captured.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_sink_target(path)  # suffix, and pyarrow (naming its extra): fail now, not at close
        if self.path.is_dir():
            raise IsADirectoryError(f"sink path {os.fspath(path)!r} is a folder, not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, _StreamFile] = {"": _StreamFile(self.path)}
        self.closed = False

    @property
    def paths(self) -> dict[str, Path]:
        """The file of each head (the first head's is ``path``)."""
        return {head: f.path for head, f in self._files.items()}

    def open_heads(self, names: list[str]) -> None:
        """Give each head its file now, in this order (the first takes ``path``): every file
        is checked and locked when the capture starts, and a run gives a head the same file
        whichever head's rows come first. Heads hooked later get theirs at their first rows."""
        for name in names:
            self._file(name)

    def _file(self, head: str) -> _StreamFile:
        file = self._files.get(head)
        if file is not None:
            return file
        file = self._files.get("")
        if file is None:
            path = self._sibling(head)
            other = next((h for h, f in self._files.items() if f.path == path), None)
            if other is not None:
                raise ValueError(
                    f"heads {other!r} and {head!r} would both write {path.name}: give them "
                    "names that differ in letters, digits, '-' or '_'"
                )
            file = _StreamFile(path)
        self._files[head] = file  # before the "" entry goes: an interruption loses no file
        self._files.pop("", None)
        return file

    def _sibling(self, head: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in head)
        return self.path.with_name(f"{self.path.stem}.{safe}{self.path.suffix}")

    def write(self, rows: RowBlock) -> None:
        """Append ``rows`` to the stream of their head, flushed to the operating system."""
        if self.closed:  # reopening would overwrite the finished file
            raise RuntimeError(f"the sink writing {self.path} is closed; start a new capture")
        heads = rows.columns["head"]
        self._file(str(heads[0]) if len(heads) else "").append(rows)

    def close(self) -> None:
        """Finish every file. After a failure (a full disk while Parquet is written), calling
        it again finishes what was not finished; a lost file is reported once."""
        lost = None
        for file in {id(f): f for f in self._files.values()}.values():
            try:
                file.finish()
            except SinkLostError as err:
                lost = lost or err
        self.closed = True
        if lost is not None:
            raise lost

    def __repr__(self) -> str:
        return f"FileSink({os.fspath(self.path)!r})"


class _StreamFile:
    """One head's file: its locked stream while rows come, the finished file after."""

    def __init__(self, path: Path) -> None:
        import fcntl  # POSIX: only a file sink needs it, not ``import probhook``

        self.path, self.stream = path, stream_path(path)
        fd = os.open(self.stream, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SinkBusyError(
                f"{os.fspath(path)} is being written by another capture or probhook run (its "
                f"stream {self.stream.name} is locked): give each run its own path"
            ) from None
        if os.fstat(fd).st_size:
            os.close(fd)
            raise FileExistsError(
                f"{os.fspath(self.stream)} holds the rows of an earlier run of {path.name} that "
                "did not finish (killed): read it with probhook.load, then move or remove it "
                "before writing this path again"
            )
        # unbuffered: a failed write leaves no bytes behind in a buffer to reach the file later
        self.handle = os.fdopen(fd, "r+b", buffering=0)
        self.size, self.rows, self.last_seq = 0, 0, -1
        self.schema = StreamSchema()
        self.ended = self.done = False
        self.lost: SinkLostError | None = None

    def append(self, rows: RowBlock) -> None:
        """Append ``rows`` unless the file has them already (a write offered again after an
        interruption): whole, or cut off again."""
        if not len(rows) or rows.seq[-1] <= self.last_seq:
            return
        if self.lost is not None:
            raise self.lost
        if os.fstat(self.handle.fileno()).st_nlink == 0:
            self.lost = SinkLostError(
                f"{os.fspath(self.stream)} was removed while rows were written to it (its "
                f"folder deleted?): the {self.rows} rows written so far are gone from disk and "
                f"{os.fspath(self.path)} will not be written; rows from now on are kept in "
                "memory only (the newest `capacity` per head: export them with to_parquet)"
            )
            raise self.lost
        data, segment = self.schema.encode(rows, first=self.size == 0)
        end, prev = self.size, self.last_seq
        try:
            self.last_seq = int(rows.seq[-1])  # first: a kept block is never written twice
            view = memoryview(data)
            while view:
                view = view[self.handle.write(view) :]
            self.size = end + len(data)
        except BaseException:
            self.last_seq = prev
            self.handle.truncate(end)
            self.handle.seek(end)
            raise
        self.schema.commit(segment)
        self.rows += len(rows)

    def finish(self) -> None:
        """End the stream and put the finished file in place (nothing when no row came)."""
        if self.done:
            return
        if self.lost is not None:
            self.done = True
            self.handle.close()
            raise self.lost
        if not self.size:
            self.done = True
            self.stream.unlink(missing_ok=True)
            self.handle.close()
            if self.path.exists():
                warnings.warn(
                    f"no row was written, so {os.fspath(self.path)} was not written: the file "
                    "there is an earlier run's",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return
        self._check_in_place()
        if not self.ended:
            self.handle.seek(self.size)
            self.handle.write(END_OF_STREAM)
            self.ended = True
        if self.path.suffix in STREAM_SUFFIXES:
            os.replace(self.stream, self.path)
        else:
            # written beside and renamed: a kill or a full disk here leaves no torn Parquet
            # file, and the stream stays until the Parquet file is complete
            part = self.path.with_name(self.path.name + ".tmp")
            try:
                write_parquet(self.stream, part, self.schema.encodings)
            except BaseException as err:
                if part.is_file():
                    part.unlink()
                if not isinstance(err, Exception):  # Ctrl-C: itself; close() again finishes
                    raise
                raise SinkError(
                    f"{os.fspath(self.path)} could not be finished ({type(err).__name__}: "
                    f"{err}); all {self.rows} rows are in {os.fspath(self.stream)}: call "
                    "close() again to finish it"
                ) from err
            os.replace(part, self.path)
            self.stream.unlink()
        self.done = True
        self.handle.close()

    def _check_in_place(self) -> None:
        """The stream is still where it was written (not moved, removed or replaced)."""
        try:
            here = os.stat(self.stream).st_ino == os.fstat(self.handle.fileno()).st_ino
        except FileNotFoundError:
            here = False
        if not here:
            self.done = True
            self.handle.close()
            self.lost = SinkLostError(
                f"{os.fspath(self.stream)} was moved, removed or replaced while the capture "
                f"wrote to it: its {self.rows} rows are wherever it went, and "
                f"{os.fspath(self.path)} was not written"
            )
            raise self.lost


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
