"""A folder of Parquet files a run wrote (``probhook run --engine ray``): which files are its
rows, and the mark of a run that has not finished writing it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

UNFINISHED = ".probhook-unfinished"
"""Marks a folder a Ray run is writing: removed once every file of the run is in place."""


def folder_files(path: Path, *, strict: bool = False) -> list[str]:
    """The Parquet files of a folder (a Ray run's); other files are skipped with a warning
    (hidden ones and those starting with ``_`` silently); the folder of a run that did not
    finish is read with a warning (``strict=True``: refused)."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if (path / UNFINISHED).is_file():
        message = (f"{path} was written by a run that did not finish (killed, failed, or still "
                   "writing): it holds only the files written so far")  # fmt: skip
        if strict:
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    visible = [p for p in files if not p.name.startswith((".", "_"))]
    stray = [p for p in visible if p.suffix != ".parquet"]
    if stray:
        warnings.warn(f"{path} holds {len(stray)} files that are not .parquet (e.g. "
                      f"{stray[0].name}): skipped", RuntimeWarning, stacklevel=3)  # fmt: skip
    parquet = [os.fspath(p) for p in visible if p.suffix == ".parquet"]
    if not parquet:
        raise ValueError(f"{os.fspath(path)} holds no Parquet file")
    return parquet
