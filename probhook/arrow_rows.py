"""The Arrow form of captured rows, both ways: what sinks write, exports build and ``load`` reads
(files are [`probhook.arrow`][probhook.arrow]'s).

One Arrow row per captured row: ``seq``, ``key``, ``head``, the extra columns, ``finite``,
derived ``predicted`` / ``confidence`` / ``margin`` / ``entropy``, and one ``p_<label>`` column
per class (``logit_<label>`` too when logits were kept). Labels, column kinds, value encodings
and the dtype travel in the schema metadata, so a file reads back into the same rows.

A value column (``key``, a ``str`` column) is Arrow text when its values are strings, int64 when
they are ints, and JSON text otherwise (a mix, tuples), so that ``5`` and ``"5"`` stay apart. A
stream written while a capture runs fixes its schema with its first block; a later block whose
values do not fit starts a new *segment* (the end-of-stream marker, then a widened schema),
and reading unifies the segments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook._extras import require
from probhook.block import INT_NA, ColumnKind, RowBlock

if TYPE_CHECKING:
    import pyarrow as pa

TEXT, INT, JSON = "text", "int", "json"
"""How a value column is stored: Arrow text, int64, or JSON text."""
RESERVED_COLUMNS = frozenset(
    {"seq", "key", "keys", "head", "finite", "predicted", "confidence", "margin", "entropy",
     "logits", "rows", "row", "meta", "status"}
)  # fmt: skip
"""Names of probhook's own columns and arguments: no metadata column may take them."""
RESERVED_PREFIXES = ("p_", "logit_")


def check_column_name(name: str) -> None:
    """Refuse a metadata column named like one of probhook's own (it would overwrite it in
    exports, or collide with an argument)."""
    if name in RESERVED_COLUMNS or name.startswith(RESERVED_PREFIXES):
        raise ValueError(
            f"column {name!r} is one of probhook's own (the columns {sorted(RESERVED_COLUMNS)} "
            f"and those starting with {' or '.join(RESERVED_PREFIXES)}): name it otherwise"
        )


def value_encoding(values: Any) -> str | None:
    """The narrowest encoding that holds ``values`` (None: no value at all)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(type(v) is str for v in present):
        return TEXT
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        return INT
    return JSON


def encode_values(values: Any, encoding: str) -> pa.Array:
    """``values`` as an Arrow array in ``encoding`` (one that holds them)."""
    import pyarrow as pa

    if encoding == TEXT:
        return pa.array(list(values), pa.string())
    if encoding == INT:
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    try:
        text = [None if v is None else json.dumps(_plain(v)) for v in values]
    except TypeError:
        kinds = sorted({type(v).__name__ for v in values if v is not None})
        raise TypeError(
            f"cannot write values of type {kinds} to a file: keys and column values must be "
            "str, int, or tuples of them"
        ) from None
    return pa.array(text, pa.string())


def rows_to_arrow(
    rows: RowBlock,
    schema: Mapping[str, ColumnKind],
    *,
    derived: bool = True,
    encodings: Mapping[str, str] | None = None,
) -> pa.Table:
    """An Arrow table of ``rows``; ``schema`` gives the kind of each metadata column,
    ``encodings`` the encoding of value columns (default: the narrowest for these rows)."""
    require("pyarrow", "parquet", "Arrow and Parquet export")
    import pyarrow as pa

    data: dict[str, Any] = {"seq": pa.array(rows.seq, pa.int64())}
    used: dict[str, str] = {}
    for name, kind in schema.items():
        values = rows.columns[name]
        if kind == "int":
            data[name] = pa.array(values, pa.int64(), mask=values == INT_NA)
        else:
            given = None if encodings is None else encodings.get(name)
            used[name] = given or value_encoding(values) or TEXT
            data[name] = encode_values(values, used[name])
    data["finite"] = pa.array(rows.finite)
    probs = np.asarray(rows.probs)
    if derived:
        data.update(derived_columns(probs, np.asarray(rows.finite), rows.labels))
    for i, label in enumerate(rows.labels):
        data[f"p_{label}"] = probs[:, i]
    if rows.logits is not None:
        for i, label in enumerate(rows.labels):
            data[f"logit_{label}"] = rows.logits[:, i]
    meta = {
        "probhook.labels": json.dumps(list(rows.labels)),
        "probhook.columns": json.dumps(dict(schema)),
        "probhook.encodings": json.dumps({n: e for n, e in used.items() if e != TEXT}),
        "probhook.dtype": str(probs.dtype),
    }
    return pa.table(data).replace_schema_metadata(meta)


def derived_columns(
    probs: npt.NDArray[Any], finite: npt.NDArray[np.bool_], labels: tuple[str, ...]
) -> dict[str, Any]:
    """``predicted``, ``confidence``, ``margin`` and ``entropy`` of each row."""
    import pyarrow as pa

    names = np.array(labels, dtype=object)
    top = np.argmax(probs, axis=1) if len(probs) and probs.shape[1] else np.zeros(len(probs), int)
    return {
        # a non-finite row has no prediction: an empty cell, never the first label
        "predicted": pa.array(
            names[top] if len(names) else [None] * len(probs), pa.string(), mask=~finite
        ),
        "confidence": metrics.max_prob(probs),
        "margin": metrics.margin(probs),
        "entropy": metrics.entropy(probs),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"tuple": [_plain(v) for v in value]}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, int, float)) or value is None:
        return value
    raise TypeError(type(value).__name__)


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(_unplain(v) for v in value["tuple"])
    return value


def decode_values(values: list[Any], encoding: str | None) -> npt.NDArray[np.object_]:
    """Values of a value column as written in ``encoding``, decoded (JSON text to values)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # one by one: a tuple stays one value
        out[i] = _unplain(json.loads(v)) if encoding == JSON and v is not None else v
    return out


def table_meta(schema: pa.Schema) -> dict[str, str]:
    """The metadata of a schema written by probhook, decoded."""
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def arrow_to_rows(table: pa.Table) -> tuple[RowBlock, dict[str, ColumnKind], str]:
    """The rows of a table written by probhook, their column kinds and their dtype."""
    meta = table_meta(table.schema)
    if "probhook.labels" not in meta:
        raise ValueError(
            "this table was not written by probhook (no probhook.labels metadata); probhook.load "
            "reads files written by a capture, to_parquet or probhook run"
        )
    labels = tuple(json.loads(meta["probhook.labels"]))
    schema: dict[str, ColumnKind] = json.loads(meta["probhook.columns"])
    encodings: dict[str, str] = json.loads(meta.get("probhook.encodings", "{}"))
    missing = [n for n in ["seq", "finite", *schema, *(f"p_{x}" for x in labels)]
               if n not in table.column_names]  # fmt: skip
    if missing:
        raise ValueError(
            f"this table lacks the columns {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            "that its probhook metadata names: it was changed after probhook wrote it"
        )
    probs = np.column_stack(
        [table.column(f"p_{label}").to_numpy() for label in labels]
        or [np.zeros((len(table), 0), np.float32)]  # an empty head whose labels were unknown
    )
    logit_names = [f"logit_{label}" for label in labels]
    logits = None
    if logit_names and all(n in table.column_names for n in logit_names):
        logits = np.column_stack([table.column(n).to_numpy() for n in logit_names]).astype(
            np.float32
        )
    columns = {}
    for name, kind in schema.items():
        col = table.column(name)
        if kind == "int":
            columns[name] = col.fill_null(INT_NA).to_numpy().astype(np.int64)
        else:
            columns[name] = decode_values(col.to_pylist(), encodings.get(name))
    rows = RowBlock(
        probs.reshape(len(table), len(labels)),
        table.column("seq").to_numpy().astype(np.int64),
        table.column("finite").to_numpy(zero_copy_only=False).astype(bool),
        columns,
        labels,
        logits,
        schema,
    )
    return rows, schema, meta.get("probhook.dtype", "float32")


def conform(
    table: Any, schema: Mapping[str, ColumnKind], source: Mapping[str, str],
    target: Mapping[str, str],
) -> Any:  # fmt: skip
    """``table`` (or record batch) with its value columns re-encoded from the ``source``
    encodings to ``target`` (one that holds them: JSON, or the same, or a column with no
    value)."""
    import pyarrow as pa

    for name, kind in schema.items():
        was, want = source.get(name, TEXT), target.get(name, TEXT)
        if kind != "str" or was == want:
            continue
        col = table.column(name)
        if col.null_count == len(col):
            new = pa.nulls(len(col), pa.int64() if want == INT else pa.string())
        else:
            values = col.to_pylist()
            new = encode_values([decode_values([v], was)[0] for v in values], want)
        table = table.set_column(table.schema.get_field_index(name), name, new)
    return table


def unified_encodings(
    schema: Mapping[str, ColumnKind], segments: list[tuple[Mapping[str, str], set[str]]]
) -> dict[str, str]:
    """One encoding per value column for segments given as (encodings, columns that hold a
    value): theirs where they agree, JSON where they do not."""
    out: dict[str, str] = {}
    for name, kind in schema.items():
        if kind != "str":
            continue
        seen = {enc.get(name, TEXT) for enc, valued in segments if name in valued}
        out[name] = seen.pop() if len(seen) == 1 else (JSON if seen else TEXT)
    return {n: e for n, e in out.items() if e != TEXT}
