"""The rows of one head, read: what ``cap.heads[name]`` and [`load`][load] return.

Examples:
    >>> import numpy as np
    >>> from probhook import ProbBuffer
    >>> from probhook.head_view import HeadView
    >>> view = HeadView("clf", buffer=ProbBuffer(3, 10, labels=["letter", "invoice", "memo"]))
    >>> view.buffer.append_batch(np.array([[0.8, 0.1, 0.1], [0.4, 0.35, 0.25]]), keys=["p1", "p2"])
    >>> view.flag(min_margin=0.1).tolist()
    [False, True]
    >>> view.top_k(1)
    [[('letter', 0.8...)], [('letter', 0.4...)]]
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import calibration, metrics
from probhook.block import ColumnKind, RowBlock
from probhook.buffer import ProbBuffer
from probhook.distribution import Distribution, DocumentDistribution

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from probhook.estimate import AccuracyEstimate
    from probhook.plots import Plotter
    from probhook.review import ReviewRule


def _same(key: Any) -> Any:
    return key


class HeadView:
    """The rows of one head: confidence, review flags, calibration, export and plots.

    Args:
        name: the head's name.
        labels: class names in column order, when known before the first row.
        columns: the head's extra metadata columns (name -> ``"int"`` or ``"str"``).
        key_of: maps what a user passes to [`get`][get] (a page, say) to a stored key.
        buffer: the rows; a capture attaches one at the head's first forward.
        kind: ``"page"``, ``"word"`` or ``"element"`` (default: told by the columns, as for a
            loaded file: ``word_id`` or ``word_index`` make word rows).
        group: the column that groups word or element rows by page (default: told by the
            columns).
    """

    def __init__(
        self,
        name: str,
        *,
        labels: Sequence[str] | None = None,
        columns: Mapping[str, ColumnKind] | None = None,
        key_of: Callable[[Any], Any] = _same,
        buffer: ProbBuffer | None = None,
        kind: str | None = None,
        group: str | None = None,
    ) -> None:
        self.name = name
        self._labels = None if labels is None else tuple(labels)
        self._schema: dict[str, ColumnKind] = {"key": "str", "head": "str", **(columns or {})}
        self._normalize_key = key_of
        self._buffer = buffer
        self._kind, self._group = kind, group

    @property
    def kind(self) -> str:
        """What a row is: ``"page"`` (one per input), ``"word"`` or ``"element"``."""
        if self._kind is not None:
            return self._kind
        schema = self.schema
        return "word" if "word_id" in schema or "word_index" in schema else "page"

    @property
    def group(self) -> str | None:
        """The column whose value tells a word or element row's page (``image_id``;
        ``sequence`` for a Hugging Face model's words), or None for page rows."""
        if self._group is not None or self.kind == "page":
            return self._group
        return "image_id" if "image_id" in self.schema else "sequence"

    @property
    def buffer(self) -> ProbBuffer | None:
        """The ring buffer holding the rows (None before the first row)."""
        return self._buffer

    def attach(self, buffer: ProbBuffer) -> None:
        """Give the head its buffer (once, at its first forward)."""
        if self._buffer is not None:
            raise RuntimeError(f"head {self.name!r} already has a buffer")
        self._buffer = buffer

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in column order."""
        if self._buffer is not None:
            return self._buffer.labels
        return self._labels or ()

    @property
    def schema(self) -> dict[str, ColumnKind]:
        """The kind of each metadata column."""
        return dict(self._buffer.schema if self._buffer is not None else self._schema)

    @property
    def probs(self) -> npt.NDArray[np.floating[Any]]:
        """``(n, C)`` probabilities of the kept rows, oldest first (a copy)."""
        if self._buffer is None:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._buffer.probs

    @property
    def logits(self) -> npt.NDArray[np.float32] | None:
        """Raw logits of the kept rows (``keep_logits=True``), else None."""
        return None if self._buffer is None else self._buffer.logits

    @property
    def keys(self) -> list[Any]:
        """The key of each kept row (page id), oldest first."""
        return [] if self._buffer is None else self._buffer.keys

    def column(self, name: str) -> npt.NDArray[Any]:
        """One metadata column (``image_id``, ``page_number``, ...), oldest first."""
        return np.array([]) if self._buffer is None else self._buffer.column(name)

    @property
    def capacity(self) -> int | None:
        """Rows the ring buffer keeps (None before the first forward)."""
        return None if self._buffer is None else self._buffer.capacity

    @property
    def evicted(self) -> int:
        """Rows dropped so far to make room (written to the sink first, if any)."""
        return 0 if self._buffer is None else self._buffer.evicted

    @property
    def appended(self) -> int:
        """Rows appended over the head's lifetime (kept plus evicted)."""
        return 0 if self._buffer is None else len(self._buffer) + self._buffer.evicted

    @property
    def nbytes(self) -> int:
        """Bytes the preallocated buffer holds."""
        return 0 if self._buffer is None else self._buffer.nbytes

    def __len__(self) -> int:
        return 0 if self._buffer is None else len(self._buffer)

    def rows(self, last: int | None = None) -> RowBlock:
        """Every kept row (or the ``last`` newest), oldest first."""
        if self._buffer is None:
            return RowBlock.empty(self.labels, self._schema)
        return self._buffer.rows() if last is None else self._buffer.tail(last)

    def get(self, key: Any) -> Distribution | None:
        """The most recent distribution captured under ``key``, or None."""
        if self._buffer is None:
            return None
        return self._named(self._buffer.lookup(self._normalize_key(key)))

    def latest(self) -> Distribution | None:
        """The newest row's distribution (O(1), unlike [`get`][get]), or None."""
        return None if self._buffer is None else self._named(self._buffer.latest())

    def distributions(self) -> Iterator[Distribution]:
        """Every kept row as a [`Distribution`][Distribution], oldest first."""
        if self._buffer is not None:
            for dist in self._buffer:
                yield self._named(dist)  # type: ignore[misc]

    def words(self, page: Any) -> list[Distribution]:
        """The word rows of ``page`` (a page or its ``image_id``; for a Hugging Face model, the
        sequence's index), newest per word, in the order of the page's newest forward: reading
        order for deepdoctection's token classifiers."""
        return self._members("word", page)

    def _members(self, kind: str, page: Any) -> list[Distribution]:
        """The ``kind`` rows of one page (see [`words`][words]), newest per key."""
        group = self.group
        if self.kind != kind or group is None or group not in self.schema:
            raise ValueError(f"head {self.name!r} holds {self.kind} rows, not {kind} rows of pages")
        if self._buffer is None:
            return []
        block = self._buffer.rows()
        target = np.empty((), object)
        target[()] = self._normalize_key(page)
        newest: dict[Any, int] = {}
        for i in np.flatnonzero(block.columns[group] == target):
            newest.pop(block.columns["key"][i], None)  # seen again: moves to the end
            newest[block.columns["key"][i]] = int(i)
        return [self._named(block.distribution(i)) for i in newest.values()]  # type: ignore[misc]

    def _named(self, dist: Distribution | None) -> Distribution | None:
        if dist is None or dist.head == self.name:
            return dist
        return Distribution(
            dist.probs, dist.labels, dist.key, self.name, dist.seq, dist.meta, dist.logits
        )

    def by_document(self) -> dict[Any, DocumentDistribution]:
        """Pages grouped by ``document_id`` (most recent row per page, by page number), with
        the mean of their distributions as the document's aggregate."""
        if self._buffer is None:
            return {}
        if "document_id" not in self._buffer.schema:
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

    # -- confidence and calibration (functional forms: probhook.metrics, probhook.calibration) --

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
        rule: metrics.Rule | None = None,
        *,
        min_confidence: metrics.Threshold = None,
        min_margin: metrics.Threshold = None,
        max_entropy: metrics.Threshold = None,
    ) -> npt.NDArray[np.bool_]:
        """Which rows (oldest first, aligned with ``keys``) to send to a person.

        Each threshold is one number, or a dict per predicted label
        (``min_confidence={"invoice": 0.9, "letter": 0.6}``; labels left out are not checked);
        ``rule``: a [`review_threshold`][review_threshold] result.
        """
        return metrics.flag(
            self._probs2d(),
            rule,
            min_confidence=min_confidence,
            min_margin=min_margin,
            max_entropy=max_entropy,
            labels=self.labels,
        )

    def flagged_keys(
        self, rule: metrics.Rule | None = None, **thresholds: metrics.Threshold
    ) -> list[Any]:
        """The keys (page ids) of the rows [`flag`][flag] selects (same rule and thresholds)."""
        return [k for k, f in zip(self.keys, self.flag(rule, **thresholds), strict=False) if f]

    def calibration(self, targets: Sequence[Any], n_bins: int = 15) -> dict[str, float]:
        """Accuracy, NLL, Brier, ECE and MCE of the kept rows against true labels (label names
        or class indices, aligned with the rows)."""
        if not len(self):
            raise ValueError(f"head {self.name!r} has no rows to score against targets")
        targets_ = self.target_indices(targets)
        return calibration.CalibrationState.of(self._probs2d(), targets_, n_bins).compute()

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
                f"target {err.args[0]!r} is not one of the labels {list(self.labels)}"
            ) from None

    def _probs2d(self) -> npt.NDArray[Any]:
        return np.asarray(self.probs, dtype=np.float64)

    def _measured_at(self) -> npt.NDArray[np.int64] | None:
        """The column each row is judged at where that is not its argmax (elements)."""
        return None

    # -- export, plots, notebook: thin calls into the presentation modules --------------------

    def to_arrow(self) -> pa.Table:
        """One Arrow row per kept row (see [`probhook.arrow`][probhook.arrow] for the columns)."""
        from probhook.export import to_arrow

        return to_arrow(self)

    def to_pandas(self) -> pd.DataFrame:
        """One DataFrame row per kept row: metadata, predicted, confidence, margin, entropy,
        and ``p_<label>`` per class."""
        from probhook.export import to_pandas

        return to_pandas(self)

    def to_parquet(self, path: str | os.PathLike[str]) -> str:
        """Write the kept rows to Parquet; returns the path (read back with ``probhook.load``)."""
        from probhook.export import to_parquet

        return to_parquet(self, path)

    @property
    def plot(self) -> Plotter:
        """Plots of these rows: ``confidence()``, ``uncertainty()``, ``reliability(targets)``,
        ``class_means()``, ``page(key)`` (matplotlib; each returns its Axes)."""
        from probhook.plots import Plotter

        return Plotter(self)

    def _repr_html_(self) -> str:
        from probhook.notebook import heads_html

        return heads_html([self])

    # -- decisions: thin calls into probhook.estimate and probhook.review ---------------------

    def estimate_accuracy(
        self, calibrate_on: Any = None, by: Any = None, *, method: str = "temperature",
        level: float = 0.95,
    ) -> AccuracyEstimate:  # fmt: skip
        """Expected accuracy without labels (mean top probability, CBPE) with its interval at
        ``level``, per-class precision, recall and F1; ``calibrate_on``: a fitted map or
        ``(labelled rows, targets)`` (``method`` "temperature" or "isotonic"); ``by``: a column
        name or values per row (see [`probhook.estimate`][probhook.estimate])."""
        from probhook.estimate import estimate_accuracy

        return estimate_accuracy(self, calibrate_on, by, method=method, level=level)

    def review_threshold(
        self, targets: Sequence[Any], max_error: float = 0.02, delta: float = 0.05, *,
        per_class: bool = False,
    ) -> ReviewRule:  # fmt: skip
        """The lowest confidence threshold whose accepted rows are wrong at most ``max_error``
        of the time with probability ``1 - delta``, from these rows and their true labels
        (see [`probhook.review`][probhook.review]); ``flag(rule)`` applies it."""
        from probhook.review import review_threshold

        return review_threshold(self._probs2d(), self.target_indices(targets), max_error, delta,
                                per_class=per_class, labels=self.labels,
                                predicted=self._measured_at())  # fmt: skip


def load(path: str | os.PathLike[str], *, strict: bool = False) -> HeadView:
    """Read a file written by ``to_parquet`` or a sink back into a read-only view.

    For a multi-head capture the sink writes one file per head (see
    [`FileSink`][probhook.sink.FileSink]). A file a killed run left behind loads every complete
    block, with a warning giving the count; ``strict=True`` refuses partial files.
    A folder of Parquet files (``probhook run --engine ray``) reads as one view of its
    classified rows (see [`read_folder`][probhook.arrow.read_folder]).
    """
    from probhook._extras import require
    from probhook.arrow import read_table
    from probhook.arrow_rows import arrow_to_rows

    require("pyarrow", "parquet", "probhook.load()")
    table = read_table(path, strict=strict)
    if table is None:  # a stream with no row yet: its labels are not known either
        message = f"{path} holds no row yet (its capture wrote none before it ended or so far)"
        if strict:
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return HeadView(Path(path).stem)
    rows, schema, dtype = arrow_to_rows(table)
    if not len(rows):  # an empty export reads back as an empty head with its columns
        return HeadView(Path(path).stem, labels=rows.labels, columns=schema)
    return HeadView(Path(path).stem, buffer=ProbBuffer.from_rows(rows, schema, dtype=dtype))
