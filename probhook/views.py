"""The read interface shared by a capture, each of its heads, and a loaded file.

>>> import numpy as np
>>> from probhook import ProbBuffer
>>> from probhook.views import HeadView
>>> view = HeadView("clf")
>>> view.buffer = ProbBuffer(3, 10, labels=["letter", "invoice", "memo"])
>>> view.buffer.append_batch(np.array([[0.8, 0.1, 0.1], [0.4, 0.35, 0.25]]), keys=["p1", "p2"])
>>> view.flag(min_margin=0.1).tolist()
[False, True]
>>> view.top_k(1)
[[('letter', 0.8...)], [('letter', 0.4...)]]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook.buffer import ProbBuffer
from probhook.distribution import Distribution, DocumentDistribution
from probhook.rows import Row

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from probhook.plots import Plotter


class HeadView:
    """The rows of one head: the read interface shared by captures, heads and loaded files."""

    def __init__(self, name: str, key_of: Callable[[Any], Any] = lambda k: k) -> None:
        self.name = name
        self.buffer: ProbBuffer | None = None
        self._normalize_key = key_of
        self._labels: tuple[str, ...] | None = None

    @property
    def labels(self) -> list[str]:
        """Class names in column order."""
        labels = self.buffer.labels if self.buffer is not None else self._labels
        return list(labels or ())

    @property
    def probs(self) -> npt.NDArray[np.floating[Any]]:
        """``(n, C)`` probabilities of the kept rows, oldest first (a copy)."""
        if self.buffer is None:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.buffer.probs

    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """Raw logits of the kept rows (``keep_logits=True``), else None."""
        return None if self.buffer is None else self.buffer.logits

    @property
    def keys(self) -> list[Any]:
        """The key of each kept row (page id), oldest first."""
        return [] if self.buffer is None else self.buffer.keys

    def column(self, name: str) -> npt.NDArray[Any]:
        """One metadata column (``image_id``, ``page_number``, ...), oldest first."""
        return np.array([]) if self.buffer is None else self.buffer.column(name)

    @property
    def capacity(self) -> int | None:
        """Rows the ring buffer keeps (None before the first forward)."""
        return None if self.buffer is None else self.buffer.capacity

    @property
    def evicted(self) -> int:
        """Rows dropped so far to make room (written to the sink first, if any)."""
        return 0 if self.buffer is None else self.buffer.evicted

    @property
    def appended(self) -> int:
        """Rows appended over the head's lifetime (kept plus evicted)."""
        return 0 if self.buffer is None else len(self.buffer) + self.buffer.evicted

    @property
    def nbytes(self) -> int:
        """Bytes the preallocated buffer holds."""
        return 0 if self.buffer is None else self.buffer.nbytes

    def __len__(self) -> int:
        return 0 if self.buffer is None else len(self.buffer)

    def get(self, key: Any) -> Distribution | None:
        """The most recent distribution captured under ``key``, or None."""
        if self.buffer is None:
            return None
        row = self.buffer.lookup(self._normalize_key(key))
        return None if row is None else self._distribution(row)

    def latest(self) -> Distribution | None:
        """The newest row's distribution (O(1), unlike :meth:`get`), or None."""
        if self.buffer is None or len(self.buffer) == 0:
            return None
        return self._distribution(self.buffer.latest(1).row(0))

    def distributions(self) -> Iterator[Distribution]:
        """Every kept row as a :class:`Distribution`, oldest first."""
        if self.buffer is not None:
            yield from map(self._distribution, self.buffer)

    def _distribution(self, row: Row) -> Distribution:
        assert self.buffer is not None
        meta = {k: v for k, v in row.columns.items() if k not in ("key", "head")}
        return Distribution(row.probs, self.buffer.labels, row.key, self.name, row.seq, meta)

    def by_document(self) -> dict[Any, DocumentDistribution]:
        """Pages grouped by ``document_id`` (most recent row per page, by page number), with
        the mean of their distributions as the document's aggregate."""
        if self.buffer is None:
            return {}
        if "document_id" not in self.buffer.schema:
            raise KeyError(
                "rows carry no document_id: by_document() needs a deepdoctection capture"
            )
        latest: dict[Any, dict[Any, Distribution]] = {}
        for dist in self.distributions():  # oldest first: later rows of a page replace earlier
            latest.setdefault(dist.meta.get("document_id"), {})[dist.key] = dist
        out = {}
        for doc_id, by_key in latest.items():
            pages = sorted(
                by_key.values(), key=lambda d: (d.meta.get("page_number") or 0, d.seq or 0)
            )
            mean = np.mean([d.probs for d in pages], axis=0)
            out[doc_id] = DocumentDistribution(
                doc_id, pages, Distribution(mean, pages[0].labels, doc_id, self.name)
            )
        return out

    def __repr__(self) -> str:
        return f"<head {self.name!r}: {len(self)} rows, {len(self.labels)} classes>"

    # -- confidence and calibration (see probhook.metrics for the functional forms) ----------

    def confidence(self) -> npt.NDArray[np.float64]:
        """Top probability of each row."""
        return metrics.max_prob(self._probs2d())

    def margin(self) -> npt.NDArray[np.float64]:
        """Top-1 minus top-2 probability of each row."""
        return metrics.margin(self._probs2d())

    def entropy(self, *, normalized: bool = False) -> npt.NDArray[np.float64]:
        """Entropy of each row in nats, or divided by log C with ``normalized``."""
        return metrics.entropy(self._probs2d(), normalized=normalized)

    def top_k(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per row, the ``k`` most probable ``(label, probability)`` pairs."""
        idx, probs = metrics.top_k(self._probs2d(), k)
        labels = self.labels
        return [[(labels[i], float(p)) for i, p in zip(r, q)] for r, q in zip(idx, probs)]  # noqa: B905

    def flag(
        self,
        *,
        min_confidence: float | None = None,
        min_margin: float | None = None,
        max_entropy: float | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Which rows (oldest first, aligned with ``keys``) to send to a person."""
        return metrics.flag(
            self._probs2d(),
            min_confidence=min_confidence,
            min_margin=min_margin,
            max_entropy=max_entropy,
        )

    def flagged_keys(self, **thresholds: float) -> list[Any]:
        """The keys (page ids) of the rows :meth:`flag` selects."""
        return [k for k, f in zip(self.keys, self.flag(**thresholds), strict=False) if f]

    def calibration(self, targets: Sequence[Any], n_bins: int = 15) -> dict[str, float]:
        """Accuracy, NLL, Brier, ECE and MCE of the kept rows against true labels (label names
        or class indices, aligned with the rows)."""
        state = metrics.CalibrationState(n_bins)
        state.update(self._probs2d(), self.target_indices(targets))
        return state.compute()

    def target_indices(self, targets: Sequence[Any]) -> npt.NDArray[np.int64]:
        """Class indices for ``targets`` given as label names or indices."""
        arr = np.asarray(targets)
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        index = {label: i for i, label in enumerate(self.labels)}
        try:
            return np.array([index[str(t)] for t in targets], dtype=np.int64)
        except KeyError as err:
            raise ValueError(
                f"target {err.args[0]!r} is not one of the labels {self.labels}"
            ) from None

    def _probs2d(self) -> npt.NDArray[Any]:
        return np.asarray(self.probs, dtype=np.float64)

    # -- export -----------------------------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """One Arrow row per kept row (see :mod:`probhook.export` for the columns)."""
        from probhook.export import view_to_arrow

        return view_to_arrow(self)

    def to_pandas(self) -> pd.DataFrame:
        """One DataFrame row per kept row: metadata, predicted, confidence, margin, entropy,
        and ``p_<label>`` per class."""
        df: pd.DataFrame = self.to_arrow().to_pandas()
        return df

    def to_parquet(self, path: str | os.PathLike[str]) -> str:
        """Write the kept rows to Parquet; returns the path (read back with ``probhook.load``)."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), path)
        return os.fspath(path)

    @property
    def plot(self) -> Plotter:
        """Plots of these rows: ``confidence()``, ``uncertainty()``, ``reliability(targets)``,
        ``class_means()``, ``page(key)`` (matplotlib; each returns its Axes)."""
        from probhook.plots import Plotter

        return Plotter(self)

    def _repr_html_(self) -> str:
        from probhook.notebook import view_html

        return view_html(self)
