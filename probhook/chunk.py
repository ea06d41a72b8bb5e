"""A chunk of a head's rows as [`probhook.scan`][probhook.scan] reads them: the probabilities and
the metadata columns, converted to numpy only when read, and only the rows asked for.

Examples:
    >>> import numpy as np
    >>> columns = of_arrays({"file_name": np.array(["a.pdf", "b.pdf", "a.pdf"], dtype=object)})
    >>> columns.take("file_name", np.array([1])).tolist()
    ['b.pdf']
    >>> found = columns.factorize("file_name")
    >>> found.codes.tolist(), found.values
    ([0, 1, 0], ['a.pdf', 'b.pdf'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


class Columns(Mapping[str, npt.NDArray[Any]]):
    """A chunk's metadata columns, converted to numpy when first read (strings as ``object``
    arrays; integers as ``int64``, or ``float64`` with NaN where a file has no value), or only
    some rows of them ([`take`][take]): a review queue needs a few rows of a string column, not
    a million Python strings."""

    def __init__(
        self,
        convert: Callable[[str, Any], npt.NDArray[Any]],
        names: Sequence[str],
        factorize: Callable[[str], Factorized] | None = None,
    ) -> None:
        self._convert, self._names, self._factorize = convert, tuple(names), factorize
        self._done: dict[str, npt.NDArray[Any]] = {}

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        if name not in self._names:
            raise KeyError(name)
        if name not in self._done:
            self._done[name] = self._convert(name, None)
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def factorize(self, name: str) -> Factorized:
        """Column ``name`` as codes and distinct values (strings of a file are encoded by
        pyarrow, never turned into Python strings row by row)."""
        if self._factorize is not None and name not in self._done:
            return self._factorize(name)
        return factorize(self[name])

    def take(self, name: str, rows: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        """Column ``name`` at ``rows`` only."""
        if name in self._done:
            return np.asarray(self._done[name][rows])
        return self._convert(name, rows)

    def subset(self, rows: npt.NDArray[np.intp]) -> Columns:
        """These columns at ``rows`` only, still converted when read."""
        factorize = self.factorize

        def found(name: str) -> Factorized:
            whole = factorize(name)
            used, codes = np.unique(whole.codes[rows], return_inverse=True)  # values of ``rows``
            return Factorized(codes.reshape(-1).astype(np.int64), [whole.values[i] for i in used])

        return Columns(lambda name, r: self.take(name, rows if r is None else rows[r]),
                       self._names, found)  # fmt: skip


@dataclass(frozen=True)
class Factorized:
    """A column as codes into its distinct ``values`` (``values[codes[i]]`` is row i's)."""

    codes: npt.NDArray[np.int64]
    values: list[Any]


def factorize(values: npt.ArrayLike) -> Factorized:
    """Codes and distinct values of a numpy column (numbers sorted, others in order of first
    appearance; ``None`` is a value)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        distinct, inverse = np.unique(arr, return_inverse=True)
        return Factorized(inverse.reshape(-1).astype(np.int64), [v.item() for v in distinct])
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in arr.tolist()), np.int64, len(arr))
    return Factorized(codes, list(index))


def of_arrays(arrays: Mapping[str, npt.NDArray[Any]]) -> Columns:
    """Columns over numpy arrays (a head's rows, already in memory)."""

    def convert(name: str, rows: Any) -> npt.NDArray[Any]:
        return np.asarray(arrays[name] if rows is None else arrays[name][rows])

    return Columns(convert, list(arrays))


@dataclass(frozen=True)
class Chunk:
    """Some rows of a head: ``(n, C)`` probabilities and the metadata columns asked for."""

    probs: npt.NDArray[np.floating[Any]]
    columns: Columns
    at: npt.NDArray[np.int64] | None = None
    """The column each row is measured at (an element row's own class); None: its argmax."""
    sigmoid: npt.NDArray[np.bool_] | None = None
    """Which rows hold a score per class rather than a distribution (a sigmoid detector's)."""

    def __len__(self) -> int:
        return len(self.probs)
