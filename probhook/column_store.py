"""The metadata columns of a buffer: ``int`` columns as int64 arrays, ``str`` columns as int32 codes
into a table of values, so that a block of rows sharing one value (a head name, a document id, the
key of a batch) writes one code into every row instead of one object reference per row.

Examples:
    >>> import numpy as np
    >>> from probhook.column_store import ColumnStore
    >>> cols = ColumnStore({"key": "str", "page": "int"}, capacity=4)
    >>> values = cols.prepare({"key": "doc-1", "page": [1, 2]}, 2)
    >>> cols.store(values, [(slice(0, 2), slice(0, 2))], survivors=lambda: np.arange(0))
    >>> cols.read("key", np.arange(2)).tolist(), cols.read("page", np.arange(2)).tolist()
    (['doc-1', 'doc-1'], [1, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.block import INT_NA, ColumnKind

Codes = npt.NDArray[np.int32]
Index = npt.NDArray[np.intp]
Parts = Sequence[tuple[slice, slice]]  # (rows of the columns, rows of the block) pairs

_UNSET = object()
_MIN_BUDGET = 64


class Broadcast:
    """One column value shared by every row of a block (stored by broadcasting)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def expand(self, n: int, dtype: Any) -> npt.NDArray[Any]:
        out = np.empty(n, dtype=dtype)
        out.fill(self.value)  # fill, not np.full: a tuple stays one value
        return out


_NO_VALUE, _NO_INT = Broadcast(None), Broadcast(INT_NA)  # a row without a value, in each kind
_NO_CODE = Broadcast(0)  # the code of None


class ColumnStore:
    """``capacity`` rows of each column in ``schema`` (name -> ``"int"`` or ``"str"``).

    Values go in as a dict from [`prepare`][prepare] (one [`Broadcast`][Broadcast] value, or one
    value per row) and come out of [`read`][read] decoded: ``str`` columns as object arrays, ``int``
    columns as int64 with [`INT_NA`][probhook.block.INT_NA] where a row has no value.
    """

    def __init__(self, schema: Mapping[str, ColumnKind], capacity: int) -> None:
        for name, kind in schema.items():
            if kind not in ("int", "str"):
                raise ValueError(f"column {name!r} has kind {kind!r}; expected 'int' or 'str'")
        self.schema = dict(schema)
        self._names = frozenset(schema)
        self._arrays: dict[str, npt.NDArray[Any]] = {
            name: np.zeros(capacity, np.int32) if kind == "str" else np.full(capacity, INT_NA)
            for name, kind in schema.items()
        }
        # room for the kept rows' values plus a quarter more before slots are reclaimed
        slots = capacity + capacity // 4
        self._tables = {n: ValueTable(slots) for n, k in schema.items() if k == "str"}
        self._none = {n: _NO_VALUE if k == "str" else _NO_INT for n, k in schema.items()}
        self._uniform: dict[str, Any] = {}  # column -> the value every kept row holds
        self._empty = True  # no row stored yet

    @staticmethod
    def row_nbytes(schema: Mapping[str, ColumnKind]) -> int:
        """Bytes per row: 8 per ``int`` column; per ``str`` column a 4-byte code and 1.25 table
        slots (an 8-byte value, a 4-byte free-list entry)."""
        n_str = sum(kind == "str" for kind in schema.values())
        return 8 * (len(schema) - n_str) + 19 * n_str

    @staticmethod
    def fixed_nbytes(schema: Mapping[str, ColumnKind]) -> int:
        """Bytes beyond the per-row share: each value table's slot for code 0."""
        return 8 * sum(kind == "str" for kind in schema.values())

    @property
    def nbytes(self) -> int:
        """Bytes held by the column arrays and value tables (not by the values themselves)."""
        return sum(a.nbytes for a in self._arrays.values()) + sum(
            t.nbytes for t in self._tables.values()
        )

    def check_names(self, names: Iterable[str]) -> None:
        """Raise a ``KeyError`` naming the columns if one of ``names`` is not among them."""
        if not self._names.issuperset(names):
            unknown = sorted(set(names) - self._names)[0]
            raise KeyError(f"unknown column {unknown!r}; this buffer has {sorted(self.schema)}")

    def prepare(self, given: Mapping[str, Any], n: int) -> dict[str, Any]:
        """Checked values for a block of ``n`` rows; columns not given have no value."""
        self.check_names(given)
        values = self._none.copy()
        for name, value in given.items():
            if value is not None:
                values[name] = self._prepare_one(name, value, n)
        return values

    def _prepare_one(self, name: str, values: Any, n: int) -> Any:
        if type(values) is Broadcast:  # one value for every row, even a tuple
            if values.value is None:
                return self._none[name]
            return Broadcast(int(values.value)) if self.schema[name] == "int" else values
        if isinstance(values, (list, tuple, np.ndarray)):
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} rows")
            if self.schema[name] == "str":
                return values
            if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
                return values.astype(np.int64)
            return np.array([INT_NA if v is None else v for v in values], dtype=np.int64)
        if self.schema[name] == "int":
            return Broadcast(INT_NA if values is None else int(values))
        return Broadcast(values)

    def store(self, values: dict[str, Any], parts: Parts, survivors: Callable[[], Index]) -> None:
        """Write prepared ``values`` (left as they are: the same store may be done again);
        ``survivors``: where the rows that stay are, whose values a full table keeps (asked
        for only then)."""
        stored = dict(values)
        for name, table in self._tables.items():
            value = stored[name]
            if value is _NO_VALUE:
                stored[name] = _NO_CODE
                continue

            def live(name: str = name) -> Codes:
                return self._raw(name, survivors())

            codes = (
                table.code(value.value, live)
                if type(value) is Broadcast
                else table.encode(value, live)
            )
            stored[name] = Broadcast(codes) if type(codes) is int else codes
        uniform = self._uniform
        for name, value in stored.items():
            # a column whose kept rows all hold one value (the head of a capture's buffer, no
            # key given) is not written at all until another value comes
            if type(value) is Broadcast and (
                self._empty or (name in uniform and uniform[name] == value.value)
            ):
                uniform[name] = value.value
                continue
            array = self._arrays[name]
            if name in uniform:
                array.fill(uniform.pop(name))  # written out once, when the value first changes
            for dst, src in parts:
                array[dst] = value.value if type(value) is Broadcast else value[src]
        self._empty = False

    def _raw(self, name: str, idx: Index) -> npt.NDArray[Any]:
        array = self._arrays[name]
        if name in self._uniform:
            return np.full(len(idx), self._uniform[name], array.dtype)
        return array[idx]

    def read(self, name: str, idx: Index) -> npt.NDArray[Any]:
        """One column's values at ``idx``, decoded."""
        values = self._raw(name, idx)
        table = self._tables.get(name)
        return values if table is None else table.decode(values)

    def read_all(self, idx: Index) -> dict[str, npt.NDArray[Any]]:
        return {name: self.read(name, idx) for name in self.schema}

    def block(self, values: Mapping[str, Any], n: int) -> dict[str, npt.NDArray[Any]]:
        """Prepared values of a block of ``n`` rows as [`read`][read] gives them."""
        out = {}
        for name, value in values.items():
            kind = object if name in self._tables else np.int64
            if type(value) is Broadcast:
                out[name] = value.expand(n, kind)
            else:
                out[name] = np.fromiter(value, kind, n) if kind is object else value
        return out

    @staticmethod
    def slice(values: Mapping[str, Any], sl: slice) -> dict[str, Any]:
        return {k: v if type(v) is Broadcast else v[sl] for k, v in values.items()}


class ValueTable:
    """A preallocated table of ``slots`` values; code 0 always stands for ``None``.

    A value repeated from one write to the next keeps its code. When the table runs out of
    free slots, or once as many values came in as were live at the last reclaim, every slot
    no stored row uses (``live``: the codes of the rows that stay, asked for only then) is
    reclaimed: memory is fixed however many distinct values (unique page ids) pass through, and
    the table holds at most about twice the values the rows use. The owner sizes ``slots`` so
    that the rows it keeps plus one write always fit.

    Examples:
        >>> names = ValueTable(slots=5)
        >>> codes = names.encode(["a", "b", "a", None], live=lambda: codes)
        >>> names.decode(codes).tolist()
        ['a', 'b', 'a', None]
        >>> code = names.encode(["h", "h"], live=lambda: codes)  # one value for the block: one code
        >>> names.values[code]
        'h'
    """

    def __init__(self, slots: int) -> None:
        self.values: npt.NDArray[np.object_] = np.full(slots + 1, None, object)
        self._free = np.arange(slots, 0, -1, dtype=np.int32)  # a stack: top is the end
        self._n_free = slots
        self._taken, self._budget = 0, _MIN_BUDGET  # slots taken since the last reclaim
        self._last: Any = _UNSET  # the value written last and its code
        self._last_code = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the preallocated table (not of the values it refers to)."""
        return self.values.nbytes + self._free.nbytes

    def code(self, value: Any, live: Callable[[], Codes]) -> int:
        """One code for ``value`` (a value written in every row of a block)."""
        if value is None:
            return 0
        if value is self._last or (type(value) is str and value == self._last):
            return self._last_code
        code = int(self._take(1, live)[0])
        self.values[code] = value
        self._last, self._last_code = value, code
        return code

    def encode(self, values: Sequence[Any], live: Callable[[], Codes]) -> Codes | int:
        """One code per value (a fresh slot each), or a single code when all are the same."""
        n = len(values)
        items = values.tolist() if isinstance(values, np.ndarray) else values
        if n and items.count(items[0]) == n:
            return self.code(items[0], live)
        codes = self._take(n, live)
        self.values[codes] = np.fromiter(items, object, n)  # a tuple stays one value
        return codes

    def decode(self, codes: Codes) -> npt.NDArray[np.object_]:
        """The values behind ``codes``."""
        decoded: npt.NDArray[np.object_] = self.values[codes]
        return decoded

    def _take(self, n: int, live: Callable[[], Codes]) -> Codes:
        if self._n_free < n or self._taken >= self._budget:
            self._reclaim(live())
            assert self._n_free >= n, "the owner sizes the table for the rows it keeps"
        top = self._n_free
        self._n_free = top - n
        self._taken += n
        codes: Codes = self._free[top - n : top].copy()
        return codes

    def _reclaim(self, live: Codes) -> None:
        used = np.zeros(len(self.values), dtype=bool)
        used[live] = True
        used[0] = True
        free = np.flatnonzero(~used).astype(np.int32)
        self.values[free] = None  # the values no row refers to can be freed
        self._n_free = len(free)
        # a reclaim scans the kept rows: it waits for as many new values as stay live
        self._taken, self._budget = 0, max(_MIN_BUDGET, len(self.values) - 1 - len(free))
        self._free[: len(free)] = free[::-1]
        if not used[self._last_code]:
            self._last, self._last_code = _UNSET, 0
