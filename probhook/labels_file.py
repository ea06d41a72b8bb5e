"""A labels file: the true class of some rows of a run, as CSV with a header.

One ``label`` column and the rows it names, by one of:

- ``key``: the row's key (a page's ``image_id``, a word's or element's ``annotation_id``);
- ``image_id``: the page (page rows);
- ``file_name`` and ``page_number``: the page of a document (page rows; pages numbered from 1;
  the document's file name, ``invoice.pdf``, or the page's as deepdoctection names it,
  ``invoice_1.pdf``).

An optional ``head`` column names the head a label is for (a run whose heads share keys);
without it a label applies to every head that holds the row and has that class. A row the run does
not hold, or a class no head of the row has, is an error naming them and how many.

Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels.csv")
    >>> _ = open(path, "w").write("file_name,page_number,label\\nletter_1.pdf,1,letter\\n")
    >>> table = read_labels(path)
    >>> table.by, table.ids, table.labels
    (('file_name', 'page_number'), [('letter_1.pdf', 1)], ['letter'])
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

ID_FORMS = (("key",), ("image_id",), ("file_name", "page_number"))
"""The ways a row can be named, in the order they are looked for."""
SHOWN = 5
"""Names quoted in an error message (the count is always complete)."""


class LabelsError(ValueError):
    """A labels file that cannot be used: its format, or rows and classes the run lacks."""


@dataclass
class LabelTable:
    """The labels of a file: ``by`` (the id columns), one id, label and head (or None) per line,
    and which lines matched a row (filled while the run is read)."""

    path: str
    by: tuple[str, ...]
    ids: list[Any]
    labels: list[str]
    heads: list[str | None]
    matched: npt.NDArray[np.bool_] = field(init=False)
    known_class: npt.NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.matched = np.zeros(len(self.ids), bool)
        self.known_class = np.zeros(len(self.ids), bool)
        self._index: dict[Any, list[int]] = {}
        for i, key in enumerate(self.ids):
            self._index.setdefault(key, []).append(i)

    def needs(self, available: Sequence[str]) -> list[str]:
        """The columns of a head's rows that name them (``location`` too, when there is one:
        deepdoctection names a page's ``file_name`` after the page, ``doc_1.pdf``, and its
        ``location`` after the document)."""
        extra = ["location"] if len(self.by) == 2 and "location" in available else []
        return [*self.by, *extra]

    def lookup(
        self, head: str, head_labels: Sequence[str], columns: Mapping[str, Any]
    ) -> npt.NDArray[np.int64]:
        """For each row (its id ``columns``), the class index of its label in ``head_labels``,
        or -1; records which lines matched."""
        class_of = {label: i for i, label in enumerate(head_labels)}
        n = len(columns[self.by[0]])
        out = np.full(n, -1, np.int64)
        for row, keys in enumerate(self._keys(columns)):
            for key in keys:
                for line in self._index.get(key, ()):
                    if self.heads[line] not in (None, head):
                        continue
                    self.matched[line] = True
                    k = class_of.get(self.labels[line], -1)
                    if k >= 0:
                        self.known_class[line] = True
                        out[row] = k
        return out

    def _keys(self, columns: Mapping[str, Any]) -> Any:
        """Each row's names: one, or its page by file name and by its document's file name."""
        if len(self.by) == 1:
            return ((str(v),) for v in columns[self.by[0]])
        pages = [_page(p) for p in columns["page_number"]]
        files = [str(f) for f in columns["file_name"]]
        if "location" not in columns:
            return (((f, p),) for f, p in zip(files, pages, strict=True))
        docs = [os.path.basename(str(loc)) for loc in columns["location"]]
        return (((f, p), (d, p)) for f, d, p in zip(files, docs, pages, strict=True))

    def check(self) -> None:
        """Refuse lines that named no row of the run, or classes their rows' heads lack."""
        problems = []
        missing = np.flatnonzero(~self.matched)
        if len(missing):
            names = ", ".join(repr(self.ids[i]) for i in missing[:SHOWN])
            problems.append(
                f"{len(missing)} of its {_lines(len(self.ids))} name rows the run does "
                f"not hold ({' + '.join(self.by)}: {names}"
                f"{', ...' if len(missing) > SHOWN else ''})"
            )
        unknown = np.flatnonzero(self.matched & ~self.known_class)
        if len(unknown):
            counts: dict[str, int] = {}
            for i in unknown:
                counts[self.labels[i]] = counts.get(self.labels[i], 0) + 1
            names = ", ".join(f"{label!r} ({_lines(n)})" for label, n in sorted(counts.items()))
            problems.append(
                f"{len(unknown)} of its {_lines(len(self.ids))} name classes the classifier "
                f"does not have: {names}"
            )
        if problems:
            raise LabelsError(f"{self.path}: " + "; ".join(problems))


def _lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def _page(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_labels(path: str | os.PathLike[str]) -> LabelTable:
    """Read a labels file (see the module), or raise [`LabelsError`][LabelsError] saying what is
    wrong with it."""
    where = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(csv.DictReader(f))
            header = list(lines[0]) if lines else []
    except FileNotFoundError:
        raise LabelsError(f"no such labels file: {where}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise LabelsError(f"{where} is not a UTF-8 CSV file ({err})") from None
    if not lines:
        raise LabelsError(f"{where} holds no labels (a header and one line per labelled row)")
    by = next((form for form in ID_FORMS if all(c in header for c in form)), None)
    if "label" not in header or by is None:
        raise LabelsError(
            f"{where} has columns {header}; expected 'label' and one of 'key', "
            "'image_id', or 'file_name' with 'page_number'"
        )
    ids: list[Any] = []
    for number, line in enumerate(lines, start=2):
        if not (line.get("label") or "").strip() or any(
            not (line.get(c) or "").strip() for c in by
        ):
            raise LabelsError(f"{where} line {number}: empty label or {' / '.join(by)}")
        if len(by) == 1:
            ids.append(line[by[0]].strip())
            continue
        page = _page(line["page_number"])
        if page is None:
            raise LabelsError(
                f"{where} line {number}: page_number {line['page_number']!r} is not a whole number"
            )
        ids.append((line["file_name"].strip(), page))
    heads = [(line.get("head") or "").strip() or None for line in lines]
    labels = [line["label"].strip() for line in lines]
    seen: dict[tuple[Any, str | None], str] = {}
    clashes = []
    for key, head, label in zip(ids, heads, labels, strict=True):
        if seen.setdefault((key, head), label) != label:
            clashes.append(key)
    if clashes:
        names = ", ".join(repr(c) for c in clashes[:SHOWN])
        more = ", ..." if len(clashes) > SHOWN else ""
        raise LabelsError(f"{where}: rows labelled twice with different classes "
                          f"({_lines(len(clashes))}: {names}{more})")  # fmt: skip
    return LabelTable(where, by, ids, labels, heads)
