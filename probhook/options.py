"""The options of a capture: one frozen object, checked once, when the capture is created.

Examples:
    >>> from probhook.options import CaptureOptions
    >>> CaptureOptions(capacity=100, temperature=2.0).temperature
    2.0
    >>> CaptureOptions(activation="softmx")
    Traceback (most recent call last):
    ...
    ValueError: activation must be one of ('auto', 'softmax', 'sigmoid', 'none'), got 'softmx'
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

Activation = Literal["auto", "softmax", "sigmoid", "none"]
ACTIVATIONS: tuple[str, ...] = ("auto", "softmax", "sigmoid", "none")
OverflowPolicy = Literal["overwrite", "error"]
OVERFLOW_POLICIES: tuple[str, ...] = ("overwrite", "error")
DTYPES: tuple[str, ...] = ("float16", "float32", "float64")
WordRule = Literal["dd", "first", "mean"]
WORD_RULES: tuple[str, ...] = ("dd", "first", "mean")
Predicate = Callable[[str, Any], bool]
Selector = Union[str, type, Predicate, Sequence[Union[str, type, Predicate]]]  # noqa: UP007
Labels = Union[Sequence[str], Mapping[str, Sequence[str]]]  # noqa: UP007


def check_capacity(capacity: Any, name: str = "capacity") -> None:
    """A row count is a positive int (``None``: derived from a memory budget)."""
    if capacity is not None and (
        type(capacity) is bool or not isinstance(capacity, int) or capacity < 1
    ):
        raise ValueError(f"{name} must be a positive int, got {capacity!r}")


def check_positive(name: str, value: Any) -> None:
    """A positive finite number."""
    if (
        type(value) is bool
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_labels(labels: Any) -> None:
    """Labels are distinct once written as text (export columns are named after them)."""
    groups = labels.values() if isinstance(labels, Mapping) else [labels]
    for group in groups:
        if group is None:
            continue
        if isinstance(group, str):
            raise TypeError(f"labels must be a list of names, got the string {group!r}")
        if not isinstance(group, Iterable):
            raise TypeError(f"labels must be a list of names (or {{head: names}}), got {labels!r}")
        names = [str(label) for label in group]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"labels must be distinct, but {repeated} appear more than once in "
                f"{list(group)} (as text, which names the export columns)"
            )


def check_selector(heads: Any) -> None:
    """``heads=``: a dotted name or glob, a module type, a predicate, or a list of them."""
    for entry in heads if isinstance(heads, (list, tuple)) else [] if heads is None else [heads]:
        if not (isinstance(entry, (str, type)) or callable(entry)):
            raise TypeError(
                "heads= entries must be a dotted name, glob, module type or predicate, "
                f"got {entry!r}"
            )


MIN_ROW_BYTES = 46
"""Bytes a row takes at least (one probability, sequence number, key and head codes and
their value-table share): enough to refuse a capacity no machine here could hold."""


def check_memory(capacity: int, row_bytes: int = MIN_ROW_BYTES) -> None:
    """Refuse a capacity whose buffer (``row_bytes`` a row) could not fit in this machine's
    memory."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf: nothing to compare with
        return
    need = capacity * row_bytes
    if need > total:
        raise MemoryError(
            f"capacity={capacity} needs at least {need / 2**30:.1f} GiB per head, but this "
            f"machine has {total / 2**30:.1f} GiB; lower capacity= (rows older than the "
            "capacity can go to a sink=)"
        )


def capacity_for(
    capacity: int | None, max_bytes: int | None, row_nbytes: int, fixed_nbytes: int
) -> int:
    """A buffer's row count: ``capacity``, or as many rows as ``max_bytes`` holds."""
    check_capacity(capacity)
    if (capacity is None) == (max_bytes is None):
        raise ValueError("give exactly one of capacity= (rows) or max_bytes= (memory budget)")
    if capacity is None:
        assert max_bytes is not None
        capacity = (max_bytes - fixed_nbytes) // row_nbytes
        if capacity < 1:
            raise ValueError(
                f"max_bytes={max_bytes} holds no row; one row takes {row_nbytes} bytes"
            )
    return capacity


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``."""
    if name == "on_overflow" and value == "spill":
        raise ValueError(
            "on_overflow='spill' is gone: writing every row to a file needs sink= alone (a path "
            "or a Sink), whatever on_overflow says; on_overflow is 'overwrite' or 'error'"
        )
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


INT64 = (-(2**63) + 1, 2**63 - 1)
"""The ints an ``int`` column holds (its lowest int64 stands for a missing value)."""


def check_value(name: str, value: Any, kind: str = "str") -> None:
    """A key or column value a file can hold as it is: ``str`` (valid Unicode: no lone
    surrogate, as a file name that is not UTF-8 gives), ``int`` or tuples of them (an ``int``
    column: an int64), or None."""
    if value is None:
        return
    if kind == "int":
        if type(value) is not int:
            raise TypeError(
                f"column {name!r} holds ints (its first value was one), got "
                f"{type(value).__name__}: {value!r}"
            )
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(
                f"column {name!r} holds 64-bit ints ({INT64[0]} .. {INT64[1]}), got {value}"
            )
        return
    parts = value if type(value) is tuple else (value,)
    what = "keys" if name == "key" else f"values of column {name!r}"
    if not all(type(v) in (str, int) for v in parts):
        raise TypeError(
            f"{what} must be str, int or tuples of them (they are written to files as such), "
            f"got {type(value).__name__}: {value!r}"
        )
    for part in parts:
        if type(part) is str:
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{what} must be valid text, got {part!r} (a lone surrogate: decode "
                    "file names with errors='replace', or pass them as bytes.hex())"
                ) from None


@dataclass(frozen=True)
class CaptureOptions:
    """The keyword options of [`probhook.capture_probs`][probhook.capture_probs] and
    [`probhook.Capture`][probhook.Capture].

    Attributes:
        capacity: rows kept per head (a ring buffer: the oldest go first, counted in
            ``evicted``).
        heads: which modules to hook: dotted name, glob, module type, predicate, or a list.
        activation: ``"auto"`` (softmax; sigmoid for multi-label HF configs), ``"softmax"``,
            ``"sigmoid"`` or ``"none"`` (keep logits).
        temperature: logits are divided by it before the activation.
        labels: class names in column order (or ``{head: names}``); default: the HF config's
            ``id2label``, else ``"0" .. "C-1"``.
        dtype: storage dtype of the probabilities: ``float32``, ``float16`` or ``float64``.
        on_overflow: ``"overwrite"`` (the oldest rows go, counted in ``evicted``) or ``"error"``
            (a forward whose rows do not fit raises [`BufferFullError`][BufferFullError]).
        sink: a [`Sink`][probhook.sink.Sink] or a file path (``.parquet`` or ``.arrows``) that
            receives every row, written before it is stored in the buffer.
        keep_logits: also keep raw logits (for temperature fitting); 4 bytes per class per row.
        flush_rows: with a sink, every row is in the file (written and flushed to the
            operating system) at most this many rows after its forward ...
        flush_seconds: ... or this many seconds after it, even if no other forward comes.
        output: which element of a tuple/list output holds the logits (an index), or which
            key of a dict output or attribute (a name); default: ``.logits`` (or the key
            ``"logits"``), else the one 2-D floating tensor.
        word_rule: which sub-token speaks for a word of a token-classification head:
            ``"dd"`` (deepdoctection's rule: the most confident one), ``"first"`` or ``"mean"``
            (see [`probhook.words`][probhook.words]).
        discarded: a detector head also keeps a row for each query that gave no element
            (below the threshold, suppressed, ...; see
            [`probhook.detections`][probhook.detections]), marked in its ``discarded`` column.
    """

    capacity: int = 10_000
    heads: Selector | None = None
    activation: Activation = "auto"
    temperature: float = 1.0
    labels: Labels | None = None
    dtype: str = "float32"
    on_overflow: OverflowPolicy = "overwrite"
    sink: Any = None
    keep_logits: bool = False
    flush_rows: int = 1000
    flush_seconds: float = 1.0
    output: int | str | None = None
    word_rule: WordRule = "dd"
    discarded: bool = False

    def __post_init__(self) -> None:
        if self.capacity is None:  # None means "from max_bytes" only for a ProbBuffer
            raise ValueError("capacity must be a positive int, got None")
        check_capacity(self.capacity)
        check_selector(self.heads)
        check_capacity(self.flush_rows, "flush_rows")
        check_positive("flush_seconds", self.flush_seconds)
        object.__setattr__(self, "flush_seconds", float(self.flush_seconds))
        if self.output is not None and (
            type(self.output) is bool or not isinstance(self.output, (int, str))
        ):
            raise TypeError(f"output must be an index or an attribute name, got {self.output!r}")
        check_labels(self.labels)
        check_memory(self.capacity)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("on_overflow", self.on_overflow, OVERFLOW_POLICIES)
        check_positive("temperature", self.temperature)
        object.__setattr__(self, "temperature", float(self.temperature))
        if self.sink is not None:
            from probhook.sink import check_sink_target

            check_sink_target(self.sink)
        if not isinstance(self.keep_logits, bool):
            raise TypeError(f"keep_logits must be True or False, got {self.keep_logits!r}")
        check_choice("word_rule", self.word_rule, WORD_RULES)
        if not isinstance(self.discarded, bool):
            raise TypeError(f"discarded must be True or False, got {self.discarded!r}")
        if self.word_rule == "mean" and self.keep_logits:
            raise ValueError(
                "word_rule='mean' averages sub-token probabilities: no single token's logits "
                "belong to a word row, so it cannot go with keep_logits=True"
            )

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> CaptureOptions:
        """Options from keyword arguments, naming the valid ones when one is unknown."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"unknown capture option {unknown[0]!r}; the options are {names}")
        return cls(**options)
