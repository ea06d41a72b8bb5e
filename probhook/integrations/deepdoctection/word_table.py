"""The command line's report for a word classifier: per page, the least confident words.

    table = WordTable(sys.stdout, shown=5, min_confidence=0.9)
    with capture_probs(analyzer, sink="words.parquet") as cap:
        for page in analyzer.analyze(path="form.pdf"):
            table.add(page, cap.words(page))
    table.summary(skipped=0, rows_file="words.parquet")

A word is flagged for review below ``min_confidence`` (top probability) or ``min_margin``
(top-1 minus top-2), as pages are by the page classifier's table.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from probhook.distribution import Distribution


class WordTable:
    """Prints each page's word count, mean confidence and flagged words, then its ``shown``
    least confident words; keeps running totals for [`summary`][summary]."""

    def __init__(
        self,
        out: TextIO,
        *,
        shown: int = 5,
        min_confidence: float | None = 0.9,
        min_margin: float | None = None,
    ) -> None:
        self.out, self.shown = out, shown
        self.min_confidence, self.min_margin = min_confidence, min_margin
        self.pages = self.words = self.flagged = 0
        self.confidence_sum = 0.0
        self.counts: Counter[str] = Counter()
        self._documents: set[Any] = set()

    def _margin(self, dist: Distribution) -> float:
        top = dist.top_k(2)
        return top[0][1] - top[1][1] if len(top) > 1 else 1.0

    def review(self, dist: Distribution) -> bool:
        """Whether a person should check this word."""
        low = self.min_confidence is not None and dist.confidence < self.min_confidence
        return low or (self.min_margin is not None and self._margin(dist) < self.min_margin)

    def add(self, page: Any, words: Sequence[Distribution]) -> None:
        """Report one page from its word distributions (``cap.words(page)``)."""
        name = Path(page.location or page.file_name or "page").name
        self._documents.add(page.document_id)
        if not words:
            print(f"{name} page {page.page_number}: no words", file=self.out)
            return
        flagged = [d for d in words if self.review(d)]
        mean = sum(d.confidence for d in words) / len(words)
        self.pages, self.words, self.flagged = (
            self.pages + 1,
            self.words + len(words),
            (self.flagged + len(flagged)),
        )
        self.confidence_sum += mean * len(words)
        self.counts.update(d.predicted for d in words if d.predicted is not None)
        print(f"{name} page {page.page_number}: {len(words)} words, mean confidence {mean:.2f}, "
              f"{len(flagged)} to review", file=self.out)  # fmt: skip
        for dist in sorted(words, key=lambda d: d.confidence)[: self.shown]:
            text = str(dist.meta.get("word") or dist.key)
            top = dist.top_k(2)
            runner_up = f"  (then {top[1][0]} {top[1][1]:.2f})" if len(top) > 1 else ""
            mark = "  <- review" if self.review(dist) else ""
            line = f"    {text[:24]:<24} {dist.predicted!s:<14} {dist.confidence:.2f}"
            print(f"{line}{runner_up}{mark}", file=self.out)

    def summary(self, skipped: int, rows_file: str | os.PathLike[str]) -> None:
        """Totals over every page added."""
        mean = self.confidence_sum / self.words if self.words else float("nan")
        out = self.out
        print("", file=out)
        print(f"{self.words} words on {self.pages} pages in {len(self._documents)} documents; "
              f"mean confidence {mean:.2f}; {self.flagged} words to review", file=out)  # fmt: skip
        counts = ", ".join(f"{label} {n}" for label, n in self.counts.most_common())
        print(f"predicted: {counts}", file=out)
        if skipped:
            print(f"skipped {skipped} inputs (see warnings on stderr)", file=out)
        print(f"all rows: {rows_file}", file=out)
