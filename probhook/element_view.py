"""The rows of a detector head, read: [`ElementView`][ElementView], a head whose rows are detected
elements (see [`probhook.elements`][probhook.elements] for what their measures mean), and
[`load`][load], which reads a file of element rows back as one.

Examples:
    >>> import numpy as np
    >>> from probhook import ProbBuffer
    >>> from probhook.element_view import ElementView
    >>> from probhook.elements import ELEMENT_COLUMNS
    >>> buffer = ProbBuffer(3, 10, labels=["table", "figure", "no_object"], columns=ELEMENT_COLUMNS)
    >>> buffer.append_batch(np.array([[.5, .3, .2], [.2, .1, .7]], np.float32), keys=["e1", "e2"],
    ...                     category_id=[1, 1], activation="softmax")
    >>> view = ElementView("layout", buffer=buffer)
    >>> view.get("e2").predicted, round(view.get("e2").confidence, 2)
    ('table', 0.2)
    >>> view.flag(min_margin=0.15).tolist()
    [False, True]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook import metrics
from probhook.distribution import Distribution
from probhook.elements import SIGMOID_ENTROPY, Measures, is_element_schema, measures, n_real
from probhook.head_view import HeadView
from probhook.head_view import load as load_head

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from probhook.plots import Plotter


class ElementDistribution(Distribution):
    """One element's row: its query's distribution, predicting the element's own class (the
    ``category_id`` in ``meta``) with the score there as its confidence."""

    @property
    def _chosen(self) -> int:
        return int(self.meta["category_id"]) - 1

    @property
    def predicted(self) -> str | None:
        """The element's class (None for a non-finite row)."""
        return self.labels[self._chosen] if self.finite else None

    @property
    def confidence(self) -> float:
        """The row's value at the element's class: the score the detector stored."""
        return float(self.probs[self._chosen])

    @property
    def margin(self) -> float:
        """Confidence minus the highest other real class (negative when the query scores
        another class higher)."""
        real = np.delete(self.probs[: n_real(self.labels)], self._chosen)
        return self.confidence - float(real.max()) if len(real) else 1.0

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(ulx, uly, lrx, lry)`` in page pixels."""
        ulx, uly, lrx, lry = (int(self.meta[k]) for k in ("ulx", "uly", "lrx", "lry"))
        return ulx, uly, lrx, lry


class ElementView(HeadView):
    """A detector head: one row per element (and, with ``discarded=True``, per query that gave
    none). Reads like any head, with the measures of [`probhook.elements`][probhook.elements]."""

    @property
    def kind(self) -> str:
        """``"element"``: one row per detected element."""
        return "element"

    @property
    def group(self) -> str | None:
        """Element rows belong to pages by ``image_id``."""
        return "image_id"

    def measures(self) -> Measures:
        """Predicted column, confidence, margin and entropy of every kept row, oldest first."""
        rows = self.rows()
        return measures(rows.probs, self.labels, rows.columns["category_id"],
                        rows.columns["activation"])  # fmt: skip

    def elements(self, page: Any, *, discarded: bool = False) -> list[Distribution]:
        """The elements of ``page`` (a page or its ``image_id``) in the order the detector's
        service stored them (for table structure: table by table); ``discarded=True`` adds the
        queries that gave none, after them."""
        if self.buffer is None:
            return []
        block = self.buffer.rows()
        image_id = self._normalize_key(page)
        newest: dict[Any, int] = {}
        reasons = block.columns["discarded"]
        for i in np.flatnonzero(block.columns["image_id"] == image_id).tolist():
            if discarded or reasons[i] is None:
                newest.pop(block.columns["key"][i], None)  # seen again: the newest forward's
                newest[block.columns["key"][i]] = i
        order = sorted(newest.values(), key=lambda i: reasons[i] is not None)  # stable
        return [self._named(block.distribution(i)) for i in order]  # type: ignore[misc]

    def _named(self, dist: Distribution | None) -> Distribution | None:
        if dist is None:
            return None
        return ElementDistribution(dist.probs, dist.labels, dist.key, self.name, dist.seq,
                                   dist.meta, dist.logits)  # fmt: skip

    def _measured_at(self) -> npt.NDArray[np.int64]:
        return self.measures().predicted

    def confidence(self) -> npt.NDArray[np.float64]:
        """Each row's value at its element's class (the detector's stored score)."""
        return self.measures().confidence

    def margin(self) -> npt.NDArray[np.float64]:
        """Each row's confidence minus its highest other real class."""
        return self.measures().margin

    def entropy(self, *, normalized: bool = False) -> npt.NDArray[np.float64]:
        """Entropy of each softmax row over its classes and "no object" (nats; divided by the
        log of the column count with ``normalized``); refused for sigmoid rows."""
        m = self.measures()
        if m.sigmoid.any():
            raise ValueError(SIGMOID_ENTROPY)
        return m.normalized_entropy() if normalized else m.entropy

    def flag(
        self,
        rule: metrics.Rule | None = None,
        *,
        min_confidence: metrics.Threshold = None,
        min_margin: metrics.Threshold = None,
        max_entropy: metrics.Threshold = None,
    ) -> npt.NDArray[np.bool_]:
        """Which rows to send to a person, by the element's own class (per-label thresholds
        too; ``rule``: a review rule); ``max_entropy`` is refused for sigmoid rows."""
        thresholds, labels = metrics.with_rule(
            rule, self.labels, min_confidence=min_confidence, min_margin=min_margin,
            max_entropy=max_entropy,
        )  # fmt: skip
        m = self.measures()
        if thresholds["max_entropy"] is not None and m.sigmoid.any():
            raise ValueError(SIGMOID_ENTROPY)
        return metrics.flag_measures(
            m.finite, m.predicted, m.width, confidence=lambda: m.confidence,
            margin=lambda: m.margin, entropy=m.normalized_entropy, labels=labels, **thresholds,
        )  # fmt: skip

    def calibration(self, targets: Any, n_bins: int = 15) -> dict[str, float]:
        """Refused: scoring detections needs them matched to true boxes first."""
        raise ValueError(
            f"head {self.name!r} holds detected elements: calibration against labels needs each "
            "element matched to a true box first (which probhook does not do); read the rows "
            "with to_pandas() and score the matched ones with probhook.calibration"
        )

    @property
    def plot(self) -> Plotter:
        """Plots of these rows, measured at each element's class (the plots against true labels
        are refused, as [`calibration`][calibration] is)."""
        from probhook.plots import Plotter

        def refused(*args: Any, **kwargs: Any) -> Any:
            self.calibration(None)

        plotter = Plotter(self)
        plotter.reliability = plotter.confusion = plotter.risk_coverage = refused  # type: ignore[method-assign]
        return plotter

    def to_arrow(self) -> pa.Table:
        """One Arrow row per kept row; ``predicted``, ``confidence``, ``margin`` and
        ``entropy`` are the element's (entropy is empty for sigmoid rows)."""
        table = super().to_arrow()
        if not table.num_rows:
            return table
        import pyarrow as pa

        m = self.measures()
        labels = np.array(self.labels, dtype=object)
        derived = {
            "predicted": pa.array(labels[m.predicted], pa.string(), mask=~m.finite),
            "confidence": pa.array(m.confidence),
            "margin": pa.array(m.margin),
            "entropy": pa.array(m.entropy, mask=m.sigmoid),
        }
        for name, values in derived.items():
            table = table.set_column(table.column_names.index(name), name, values)
        return table

    def to_pandas(self) -> pd.DataFrame:
        """One DataFrame row per kept row (columns as [`to_arrow`][to_arrow])."""
        from probhook._extras import require

        require("pandas", "pandas", "to_pandas()")
        df: pd.DataFrame = self.to_arrow().to_pandas()
        return df

    def to_parquet(self, path: str | os.PathLike[str]) -> str:
        """Write the kept rows to Parquet; returns the path (read back with ``probhook.load``)."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), path)
        return os.fspath(path)


def view_type(columns: Mapping[str, Any]) -> type[HeadView]:
    """The view for a head whose rows carry ``columns``: element rows or any others."""
    return ElementView if is_element_schema(columns) else HeadView


def keyed_by_annotation(view: HeadView) -> bool:
    """Whether ``view``'s rows are keyed by annotations (words, elements), not pages."""
    return "word_id" in view.schema or isinstance(view, ElementView)


def words_of(
    heads: Mapping[str, HeadView], page: Any, head: str | None = None
) -> list[Distribution]:
    """The words of ``page`` in the word head ``head`` of ``heads`` (needed only when there are
    several), in reading order."""
    if head is None:
        token_heads = [n for n, v in heads.items() if v.kind == "word"]
        if len(token_heads) != 1:
            raise ValueError(
                f"words() reads a token head; this capture has {len(token_heads)} "
                f"({', '.join(token_heads) or 'none'}): name one with head="
            )
        head = token_heads[0]
    return heads[head].words(page)


def elements_of(
    heads: Mapping[str, HeadView], page: Any, head: str | None = None, *, discarded: bool = False
) -> list[Distribution]:
    """The elements of ``page`` in the detector head ``head`` of ``heads``, else in every one
    of them, head by head (see [`ElementView.elements`][ElementView.elements])."""
    names = [head] if head is not None else [
        n for n, v in heads.items() if isinstance(v, ElementView)
    ]  # fmt: skip
    if not names:
        raise ValueError("elements() reads detector heads; this capture has none "
                         f"({', '.join(heads) or 'no heads'})")  # fmt: skip
    out: list[Distribution] = []
    for name in names:
        view = heads[name]
        if not isinstance(view, ElementView):
            raise ValueError(f"head {name!r} is not a detector head: it holds no elements")
        out += view.elements(page, discarded=discarded)
    return out


def load(path: str | os.PathLike[str], *, strict: bool = False) -> HeadView:
    """Read a file written by ``to_parquet`` or a sink back into a read-only view: an
    [`ElementView`][ElementView] for element rows (see
    ``probhook.head_view.load``)."""
    view = load_head(path, strict=strict)
    if not is_element_schema(view.schema):
        return view
    if view.buffer is None:
        return ElementView(Path(path).stem, labels=view.labels, columns=view.schema)
    return ElementView(view.name, buffer=view.buffer)
