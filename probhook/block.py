"""A block of captured rows as it leaves a buffer (what reads return and sinks receive), and the
read protocol that presentation code (plots, HTML, export) uses, so that it never depends on
where rows are kept.

Examples:
    >>> import numpy as np
    >>> from probhook.block import RowBlock
    >>> block = RowBlock(np.eye(2, dtype=np.float32), np.arange(2), np.ones(2, bool),
    ...                  {"key": np.array(["a", "b"], dtype=object)}, ("no", "yes"))
    >>> for dist in block:
    ...     print(dist.key, dist.seq, dist.predicted)
    a 0 no
    b 1 yes
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from probhook.distribution import Distribution

ColumnKind = Literal["int", "str"]
INT_NA = np.iinfo(np.int64).min
"""Stored in an ``int`` column where a row has no value (exported as a missing value)."""


@dataclass(frozen=True)
class RowBlock:
    """Rows in chronological order, column by column.

    ``columns`` holds ``key``, ``head`` and every extra column (strings as ``object`` arrays,
    ``None`` where missing; integers as ``int64`` with [`INT_NA`][INT_NA] where missing);
    ``schema`` the kind of each (blocks a buffer gives out always carry it).
    """

    probs: npt.NDArray[np.floating[Any]]
    seq: npt.NDArray[np.int64]
    finite: npt.NDArray[np.bool_]
    columns: dict[str, npt.NDArray[Any]]
    labels: tuple[str, ...]
    logits: npt.NDArray[np.float32] | None = None
    schema: Mapping[str, ColumnKind] | None = None

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def kinds(self) -> dict[str, ColumnKind]:
        """The kind of each column: ``schema``, or for a block made by hand, read from the
        arrays (int64 arrays are ``int`` columns)."""
        if self.schema is not None:
            return dict(self.schema)
        return {n: "int" if v.dtype.kind == "i" else "str" for n, v in self.columns.items()}

    @classmethod
    def empty(cls, labels: tuple[str, ...], schema: Mapping[str, ColumnKind]) -> RowBlock:
        """No rows, with ``labels`` and the columns of ``schema`` (what an empty head reads)."""
        columns = {n: np.zeros(0, np.int64 if k == "int" else object) for n, k in schema.items()}
        probs = np.zeros((0, len(labels)), np.float32)
        return cls(probs, np.zeros(0, np.int64), np.zeros(0, bool), columns, labels, None, schema)

    @classmethod
    def concat(cls, blocks: Sequence[RowBlock]) -> RowBlock:
        """The rows of ``blocks`` (same labels and columns) in one block ordered by sequence
        number; ties (blocks from separate processes) keep argument order."""
        seq = np.concatenate([b.seq for b in blocks])
        order = np.argsort(seq, kind="stable")
        logits = [b.logits for b in blocks if b.logits is not None]
        return cls(
            np.concatenate([b.probs for b in blocks])[order],
            seq[order],
            np.concatenate([b.finite for b in blocks])[order],
            {n: np.concatenate([b.columns[n] for b in blocks])[order] for n in blocks[0].columns},
            blocks[0].labels,
            np.concatenate(logits)[order] if logits else None,
            blocks[0].schema,
        )

    def __iter__(self) -> Iterator[Distribution]:
        for i in range(len(self)):
            yield self.distribution(i)

    def distribution(self, i: int) -> Distribution:
        """Row ``i`` as a [`Distribution`][probhook.Distribution] (its other columns in
        ``meta``)."""
        meta = {name: _scalar(values[i]) for name, values in self.columns.items()}
        key, head = meta.pop("key", None), meta.pop("head", None)
        logits = None if self.logits is None else self.logits[i]
        head = None if head is None else str(head)
        return Distribution(self.probs[i], self.labels, key, head, int(self.seq[i]), meta, logits)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.integer):
        return None if value == INT_NA else int(value)
    return value


class RowSource(Protocol):
    """The rows of one head as presentation code reads them: a capture's head, a capture with
    one head, and a loaded file all provide it."""

    @property
    def name(self) -> str:
        """The head's name."""

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in column order."""

    @property
    def schema(self) -> dict[str, ColumnKind]:
        """The kind of each metadata column (``key``, ``head``, page columns, ...)."""

    @property
    def probs(self) -> npt.NDArray[np.floating[Any]]:
        """``(n, C)`` probabilities, oldest first."""

    @property
    def keys(self) -> list[Any]:
        """The key of each row, oldest first."""

    @property
    def capacity(self) -> int | None:
        """Rows kept at most (None before the first row)."""

    @property
    def evicted(self) -> int:
        """Rows dropped so far to make room."""

    @property
    def nbytes(self) -> int:
        """Bytes held for the rows."""

    def __len__(self) -> int:
        """Rows kept."""

    def rows(self, last: int | None = None) -> RowBlock:
        """Every kept row (or the ``last`` newest), oldest first."""

    def get(self, key: Any) -> Distribution | None:
        """The most recent row for ``key``."""

    def target_indices(self, targets: Any) -> npt.NDArray[np.int64]:
        """Class indices for targets given as label names or indices."""
