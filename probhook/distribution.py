"""One row's probability distribution with its labels, and the read protocol of a set of rows.

Examples:
    >>> import numpy as np
    >>> from probhook import Distribution
    >>> d = Distribution(np.array([0.1, 0.7, 0.2]), ("letter", "invoice", "memo"))
    >>> d.predicted, round(d.confidence, 2)
    ('invoice', 0.7)
    >>> d.top_k(2)
    [('invoice', 0.7), ('memo', 0.2)]

[`Distribution`][Distribution] is the one type a captured row is read as: ``cap.get(key)``,
iteration over a head, ``buffer.lookup(key)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Distribution:
    """Probabilities over ``labels`` for one captured row, with the row's metadata.

    ``meta`` holds the row's other columns (page columns for deepdoctection rows);
    ``logits`` the raw logits when the capture kept them.
    """

    probs: npt.NDArray[np.floating[Any]]
    labels: tuple[str, ...]
    key: Any = None
    head: str | None = None
    seq: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    logits: npt.NDArray[np.float32] | None = None

    @property
    def finite(self) -> bool:
        """False when the row holds NaN or inf (in the logits, NaN or +inf)."""
        if not bool(np.isfinite(self.probs).all()):
            return False
        lg = self.logits
        return lg is None or not bool((np.isnan(lg) | np.isposinf(lg)).any())

    @property
    def predicted(self) -> str | None:
        """The label with the highest probability; None for a non-finite row (NaN or inf),
        which has no prediction."""
        return self.labels[int(np.argmax(self.probs))] if self.finite else None

    @property
    def confidence(self) -> float:
        """The highest probability."""
        return float(np.max(self.probs))

    @property
    def where(self) -> str:
        """Where the row came from, for people: ``invoice.pdf p.2`` for a deepdoctection page
        (its source file, not its UUID), else the key."""
        location, name = self.meta.get("location"), self.meta.get("file_name")
        source = PurePath(location).name if location else name
        if source:
            page = self.meta.get("page_number")
            return f"{source} p.{page}" if page is not None else str(source)
        return "" if self.key is None else str(self.key)

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable labels with their probabilities, most probable first."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]

    def as_dict(self) -> dict[str, float]:
        """``{label: probability}`` in column order."""
        return {label: float(p) for label, p in zip(self.labels, self.probs, strict=False)}

    def __repr__(self) -> str:
        top = ", ".join(f"{label}={p:.3f}" for label, p in self.top_k(3))
        if self.meta.get("file_name") or self.meta.get("location"):
            where = f" at {self.where!r}"
        else:
            where = f" key={self.key!r}" if self.key is not None else ""
        return f"Distribution({top}{', ...' if len(self.labels) > 3 else ''}{where})"

    def _repr_html_(self) -> str:
        from probhook.notebook import distribution_html

        return distribution_html(self)


@dataclass(frozen=True)
class DocumentDistribution:
    """The pages of one document and their aggregate.

    ``mean`` is the unweighted mean of the page distributions: every page counts once, whatever
    its length, so a one-line cover page weighs as much as a dense one.
    """

    document_id: Any
    pages: list[Distribution]
    mean: Distribution

    @property
    def predicted(self) -> str | None:
        """The most probable label of the mean distribution."""
        return self.mean.predicted

    @property
    def confidence(self) -> float:
        """The top probability of the mean distribution."""
        return self.mean.confidence
