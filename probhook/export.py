"""Lossless export of a head's rows: Arrow, pandas, Parquet (columns: see
[`probhook.arrow`][probhook.arrow]).

Examples:
    >>> import numpy as np, tempfile, os
    >>> from probhook import ProbBuffer, load
    >>> from probhook.export import to_parquet
    >>> from probhook.head_view import HeadView
    >>> view = HeadView("clf", buffer=ProbBuffer(2, 4, labels=["no", "yes"]))
    >>> view.buffer.append_batch(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), keys=["a", "b"])
    >>> path = to_parquet(view, os.path.join(tempfile.mkdtemp(), "run.parquet"))
    >>> load(path).get("b").predicted
    'yes'

A head with no rows exports an empty table with the same columns.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from probhook._extras import require
from probhook.arrow_rows import rows_to_arrow
from probhook.block import RowSource

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def to_arrow(source: RowSource) -> pa.Table:
    """One Arrow row per kept row of ``source``."""
    return rows_to_arrow(source.rows(), source.schema)


def to_pandas(source: RowSource) -> pd.DataFrame:
    """One DataFrame row per kept row of ``source``; an int column with missing values keeps
    its ints (pandas' nullable ``Int64``), instead of becoming floats."""
    require("pandas", "pandas", "to_pandas()")
    require("pyarrow", "pandas", "to_pandas()")
    import pyarrow as pa

    table = to_arrow(source)
    df: pd.DataFrame = table.to_pandas()
    for name in table.column_names:
        column = table.column(name)
        if column.null_count and pa.types.is_integer(column.type):
            df[name] = column.to_pandas(types_mapper={pa.int64(): _nullable_int()}.get)
    return df


def _nullable_int() -> object:
    import pandas as pd

    return pd.Int64Dtype()


def to_parquet(source: RowSource, path: str | os.PathLike[str]) -> str:
    """Write the kept rows of ``source`` to Parquet; returns the path."""
    require("pyarrow", "parquet", "to_parquet()")
    import pyarrow.parquet as pq

    pq.write_table(to_arrow(source), path)
    return os.fspath(path)
