"""The command line's report for a word classifier: per page, the least confident words (a
table), or every word (JSON lines, ``--format json``).

    table = WordTable(shown=5, min_confidence=0.9)
    with capture_probs(analyzer, sink="words.parquet") as cap:
        for page in analyzer.analyze(path="form.pdf"):
            print(*table.page(Path("form.pdf"), page, cap.words(page)), sep="\\n")
    print(*table.summary(skipped=0, rows_file=Path("words.parquet")), sep="\\n")

A word is flagged for review below ``min_confidence`` (top probability) or ``min_margin``
(top-1 minus top-2), or when its probabilities are not finite, as pages are by the page
classifier's table.

One JSON line per page:

    {"document": "form.pdf", "page": 1, "image_id": "...", "classified": true, "flagged": 2,
     "words": [{"word": "Total", "word_id": "...", "predicted": "B-question",
                "confidence": 0.93, "margin": 0.88, "flagged": false,
                "probs": {"B-answer": 0.01, ...}}, ...]}

``words`` are in reading order; a word whose model output was NaN or inf has ``null`` for
``predicted``, ``confidence``, ``margin`` and its probabilities, and is flagged. A page without
words has ``"classified": false`` and no words.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probhook.distribution import Distribution


class WordTable:
    """Each page's word count, mean confidence and flagged words, then its ``shown`` least
    confident words (or, with ``json``, one JSON object per page with every word); running
    totals for [`summary`][summary]. Methods return lines: the caller prints them."""

    def __init__(
        self,
        *,
        shown: int = 5,
        min_confidence: float | None = 0.9,
        min_margin: float | None = None,
        json: bool = False,
    ) -> None:
        self.shown, self.json = shown, json
        self.min_confidence, self.min_margin = min_confidence, min_margin
        self.pages = self.words = self.flagged = self.empty = 0
        self.confidence_sum = 0.0
        self.counts: Counter[str] = Counter()
        self._documents: set[Any] = set()

    def _margin(self, dist: Distribution) -> float:
        top = dist.top_k(2)
        return top[0][1] - top[1][1] if len(top) > 1 else 1.0

    def review(self, dist: Distribution) -> bool:
        """Whether a person should check this word (non-finite probabilities: always)."""
        if dist.predicted is None:
            return True
        low = self.min_confidence is not None and dist.confidence < self.min_confidence
        return low or (self.min_margin is not None and self._margin(dist) < self.min_margin)

    def header(self) -> list[str]:
        """No header: each page's lines say what they are."""
        return []

    def page(self, document: Path, page: Any, words: Sequence[Distribution]) -> list[str]:
        """The lines for one page from its word distributions (``cap.words(page)``)."""
        self._documents.add(document)
        flagged = [d for d in words if self.review(d)]
        finite = [d for d in words if d.predicted is not None]
        if words:
            self.pages, self.words = self.pages + 1, self.words + len(words)
            self.flagged += len(flagged)
            self.confidence_sum += sum(d.confidence for d in finite)
            self.counts.update(str(d.predicted) for d in finite)
        else:
            self.empty += 1
        if self.json:
            return [self._json(document, page, words, len(flagged))]
        name = document.name
        if not words:
            return [f"{name} page {page.page_number}: no words (not classified)"]
        mean = (f"mean confidence {sum(d.confidence for d in finite) / len(finite):.2f}"
                if finite else "no finite confidence")  # fmt: skip
        lines = [f"{name} page {page.page_number}: {len(words)} words, {mean}, "
                 f"{len(flagged)} to review"]  # fmt: skip
        for dist in sorted(words, key=_sort_key)[: self.shown]:
            text = str(dist.meta.get("word") or dist.key)
            top = dist.top_k(2) if dist.predicted is not None else []
            runner_up = f"  (then {top[1][0]} {top[1][1]:.2f})" if len(top) > 1 else ""
            mark = "  <- review" if self.review(dist) else ""
            line = f"    {text[:24]:<24} {dist.predicted!s:<14} {dist.confidence:.2f}"
            lines.append(f"{line}{runner_up}{mark}")
        return lines

    def _json(self, document: Path, page: Any, words: Sequence[Distribution], flagged: int) -> str:
        record = {"document": str(document), "page": int(page.page_number),
                  "image_id": page.image_id, "classified": bool(words), "flagged": flagged,
                  "words": [self._word(d) for d in words]}  # fmt: skip
        return json.dumps(record)

    def _word(self, dist: Distribution) -> dict[str, Any]:
        finite = dist.predicted is not None  # JSON has no NaN: null instead
        return {
            "word": dist.meta.get("word"),
            "word_id": dist.key,
            "predicted": dist.predicted,
            "confidence": dist.confidence if finite else None,
            "margin": self._margin(dist) if finite else None,
            "flagged": self.review(dist),
            "probs": dist.as_dict() if finite else dict.fromkeys(dist.labels),
        }

    def summary(self, skipped: int, rows_file: Path | None, interrupted: str | None) -> list[str]:
        """Totals over every page reported; ``rows_file`` is None when none was written."""
        lines = [""]
        if interrupted:
            lines.append(f"interrupted by {interrupted}: stopped after {self.pages} pages; the "
                         "rows file holds every word of them")  # fmt: skip
        if self.words:
            mean = self.confidence_sum / max(sum(self.counts.values()), 1)
            lines.append(f"{self.words} words on {self.pages} pages in {len(self._documents)} "
                         f"documents; mean confidence {mean:.2f}; {self.flagged} words to "
                         "review")  # fmt: skip
            counts = ", ".join(f"{label} {n}" for label, n in self.counts.most_common())
            lines.append(f"predicted: {counts}")
        else:
            lines.append("no word classified")
        if self.empty:
            lines.append(f"{self.empty} pages had no words and were not classified")
        if skipped:
            lines.append(f"skipped {skipped} inputs (see warnings on stderr)")
        lines.append(f"all rows: {rows_file}" if rows_file is not None else "no rows file written")
        return lines


def _sort_key(dist: Distribution) -> float:
    """Least confident first; non-finite words first of all."""
    return dist.confidence if dist.predicted is not None and math.isfinite(dist.confidence) else -1
