"""The Arrow form of captured rows, both ways: what sinks write, exports build and ``load`` reads.

One Arrow row per captured row: ``seq``, ``key``, ``head``, the extra columns, ``finite``,
derived ``predicted`` / ``confidence`` / ``margin`` / ``entropy``, and one ``p_<label>`` column
per class (``logit_<label>`` too when logits were kept). Labels, column kinds and the dtype travel
in the schema metadata, so a file reads back into the same rows.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook._extras import require
from probhook.block import INT_NA, ColumnKind, RowBlock

if TYPE_CHECKING:
    import pyarrow as pa

STREAM_SUFFIXES = (".arrows", ".arrow", ".ipc")
"""Suffixes of Arrow IPC stream files (everything else is read as Parquet)."""
PARTIAL = ".partial.arrows"
"""Suffix of the stream a ``.parquet`` sink writes until it is closed."""


def stream_path(path: Path) -> Path:
    """Where rows bound for ``path`` are streamed while a capture runs."""
    return path if path.suffix in STREAM_SUFFIXES else path.with_name(path.name + PARTIAL)


def rows_to_arrow(
    rows: RowBlock, schema: dict[str, ColumnKind], *, derived: bool = True
) -> pa.Table:
    """An Arrow table of ``rows``; ``schema`` gives the kind of each metadata column."""
    require("pyarrow", "parquet", "Arrow and Parquet export")
    import pyarrow as pa

    data: dict[str, Any] = {"seq": pa.array(rows.seq, pa.int64())}
    encodings: dict[str, str] = {}
    for name, kind in schema.items():
        values = rows.columns[name]
        if kind == "int":
            data[name] = pa.array(values, pa.int64(), mask=values == INT_NA)
        else:
            data[name], encoding = _encode(values)
            if encoding:
                encodings[name] = encoding
    data["finite"] = pa.array(rows.finite)
    probs = np.asarray(rows.probs)
    if derived:
        labels = np.array(rows.labels, dtype=object)
        top = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, int)
        # a non-finite row has no prediction: an empty cell, never the first label
        data["predicted"] = pa.array(labels[top], pa.string(), mask=~np.asarray(rows.finite))
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
        "probhook.encodings": json.dumps(encodings),
        "probhook.dtype": str(probs.dtype),
    }
    return pa.table(data).replace_schema_metadata(meta)


def _encode(values: Any) -> tuple[Any, str | None]:
    """A value column as Arrow: strings as strings, ints as int64, anything else (a mix of
    both, tuples) as JSON text, so that ``5`` and ``"5"`` stay apart and read back exactly."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if all(type(v) is str for v in present):
        return pa.array(list(values), pa.string()), None
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else int(v) for v in values], pa.int64()), "int"
    try:
        text = [None if v is None else json.dumps(_plain(v)) for v in values]
    except TypeError:
        kinds = sorted({type(v).__name__ for v in present})
        raise TypeError(
            f"cannot write values of type {kinds} to a file: keys and column values must be "
            "str, int, or tuples of them"
        ) from None
    return pa.array(text, pa.string()), "json"


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


def _decode(values: list[Any], encoding: str | None) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # one by one: a tuple stays one value
        out[i] = _unplain(json.loads(v)) if encoding == "json" and v is not None else v
    return out


def arrow_to_rows(table: pa.Table) -> tuple[RowBlock, dict[str, ColumnKind], str]:
    """The rows of a table written by probhook, their column kinds and their dtype."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "probhook.labels" not in meta:
        raise ValueError("this table was not written by probhook (no probhook.labels metadata)")
    labels = tuple(json.loads(meta["probhook.labels"]))
    schema: dict[str, ColumnKind] = json.loads(meta["probhook.columns"])
    encodings: dict[str, str] = json.loads(meta.get("probhook.encodings", "{}"))
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
            columns[name] = _decode(col.to_pylist(), encodings.get(name))
    rows = RowBlock(
        probs.reshape(len(table), len(labels)),
        table.column("seq").to_numpy().astype(np.int64),
        table.column("finite").to_numpy(zero_copy_only=False).astype(bool),
        columns,
        labels,
        logits,
    )
    return rows, schema, meta.get("probhook.dtype", "float32")


def read_table(path: str | os.PathLike[str], *, strict: bool = False) -> pa.Table:
    """Read a ``.parquet`` file, a folder of them ([`read_folder`][probhook.arrow.read_folder])
    or an Arrow IPC stream written by probhook.

    A stream cut short by a killed writer yields every block that was completely written,
    with a warning saying how many rows were recovered (``strict=True`` raises instead). A
    ``.parquet`` sink that was never closed is read from its partial stream. Anything else
    unreadable raises a ``ValueError`` naming the file and what is wrong with it.
    """
    require("pyarrow", "parquet", "reading a Parquet or Arrow file (probhook.load)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        partial = stream_path(path)
        if path.suffix == ".parquet" and partial.exists():
            warnings.warn(
                f"{path} was never finished (the run was killed or not closed); reading the rows "
                f"it streamed to {partial.name}",
                RuntimeWarning,
                stacklevel=2,
            )
            return read_table(partial, strict=strict)
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix not in STREAM_SUFFIXES and not path.name.endswith(PARTIAL):
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(
                f"{path} is not a readable Parquet file ({err}); no rows recovered. A run "
                "killed while writing Parquet leaves its rows in the .partial.arrows file"
            ) from None
    batches: list[pa.RecordBatch] = []
    with pa.OSFile(os.fspath(path), "rb") as f:
        try:
            reader = pa.ipc.open_stream(f)
        except (pa.ArrowInvalid, OSError) as err:
            if path.stat().st_size == 0:
                raise ValueError(f"{path} is empty: no row was written to it") from None
            raise ValueError(
                f"{path} is not an Arrow stream written by probhook ({err}); no rows recovered"
            ) from None
        damage = None
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as err:  # torn last message: the writer was killed
                damage = err
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    if damage is not None:
        message = (
            f"{path} ends in an incomplete block ({damage}): {table.num_rows} rows in "
            f"{len(batches)} complete blocks were recovered"
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return table


def read_folder(path: str | os.PathLike[str]) -> pa.Table:
    """The rows of a folder of Parquet files written by several writers (Ray workers, say): one
    label space across files, only rows whose ``status`` (where there is one) is ``"ok"``, and
    sequence numbers renumbered in reading order (each writer numbered its own rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    folder = pds.dataset(os.fspath(path), format="parquet")
    if not folder.files:
        raise ValueError(f"{os.fspath(path)} holds no Parquet file")
    metadata = [f.physical_schema.metadata or {} for f in folder.get_fragments()]
    labels = {m.get(b"probhook.labels") for m in metadata}
    if len(labels) != 1:
        raise ValueError(f"the files in {os.fspath(path)} hold different label spaces: "
                         f"{sorted(str(x) for x in labels)}; load them one by one")  # fmt: skip
    table = folder.to_table()
    if "status" in table.column_names:
        table = table.filter(pc.equal(table.column("status"), "ok"))
    seq = pa.array(np.arange(len(table), dtype=np.int64))
    table = table.set_column(table.column_names.index("seq"), "seq", seq)
    return table.replace_schema_metadata(metadata[0])
