"""The Arrow form of captured rows, both ways: what sinks write, exports build and ``load`` reads.

One Arrow row per captured row: ``seq``, ``key``, ``head``, the extra columns, ``finite``,
derived ``predicted`` / ``confidence`` / ``margin`` / ``entropy``, and one ``p_<label>`` column
per class (``logit_<label>`` too when logits were kept). Labels, column kinds and the dtype travel
in the schema metadata, so a file reads back into the same rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from probhook import metrics
from probhook.block import INT_NA, ColumnKind, RowBlock

if TYPE_CHECKING:
    import pyarrow as pa

STREAM_SUFFIXES = (".arrows", ".arrow", ".ipc")
"""Suffixes of Arrow IPC stream files (everything else is read as Parquet)."""


def rows_to_arrow(
    rows: RowBlock, schema: dict[str, ColumnKind], *, derived: bool = True
) -> pa.Table:
    """An Arrow table of ``rows``; ``schema`` gives the kind of each metadata column."""
    import pyarrow as pa

    data: dict[str, Any] = {"seq": pa.array(rows.seq, pa.int64())}
    for name, kind in schema.items():
        values = rows.columns[name]
        if kind == "int":
            data[name] = pa.array(values, pa.int64(), mask=values == INT_NA)
        else:
            data[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    data["finite"] = pa.array(rows.finite)
    probs = np.asarray(rows.probs)
    if derived:
        labels = np.array(rows.labels, dtype=object)
        top = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, int)
        data["predicted"] = pa.array(labels[top].tolist() if len(probs) else [], pa.string())
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
        "probhook.dtype": str(probs.dtype),
    }
    return pa.table(data).replace_schema_metadata(meta)


def arrow_to_rows(table: pa.Table) -> tuple[RowBlock, dict[str, ColumnKind], str]:
    """The rows of a table written by probhook, their column kinds and their dtype."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "probhook.labels" not in meta:
        raise ValueError("this table was not written by probhook (no probhook.labels metadata)")
    labels = tuple(json.loads(meta["probhook.labels"]))
    schema: dict[str, ColumnKind] = json.loads(meta["probhook.columns"])
    probs = np.column_stack([table.column(f"p_{label}").to_numpy() for label in labels])
    logit_names = [f"logit_{label}" for label in labels]
    logits = None
    if all(n in table.column_names for n in logit_names):
        logits = np.column_stack([table.column(n).to_numpy() for n in logit_names]).astype(
            np.float32
        )
    columns = {}
    for name, kind in schema.items():
        col = table.column(name)
        if kind == "int":
            columns[name] = col.fill_null(INT_NA).to_numpy().astype(np.int64)
        else:
            columns[name] = np.array(col.to_pylist(), dtype=object)
    rows = RowBlock(
        probs.reshape(len(table), len(labels)),
        table.column("seq").to_numpy().astype(np.int64),
        table.column("finite").to_numpy(zero_copy_only=False).astype(bool),
        columns,
        labels,
        logits,
    )
    return rows, schema, meta.get("probhook.dtype", "float32")


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """Read a ``.parquet`` file, a folder of them (:func:`read_folder`) or an Arrow IPC stream;
    a stream cut short by a killed writer yields every batch that was completely written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if path.suffix not in STREAM_SUFFIXES:
        return pq.read_table(path)
    batches = []
    with pa.OSFile(os.fspath(path), "rb") as f:
        reader = pa.ipc.open_stream(f)
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):  # torn last message: the writer was killed
                break
        return pa.Table.from_batches(batches, schema=reader.schema)


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
