"""The command line's detectors: a layout detector and a table-structure detector from their
model folders, put in front of the analyzer, each captured into its own rows file, and the
report of each page's least confident elements.

    report = ElementReport.build(analyzer, layout_dir, table_dir, out=Path("run.parquet"),
                                 stream=sys.stdout, shown=5, min_confidence=0.9)
    analyzer = report.analyzer  # the detectors first, then the analyzer's own components
    report.start()
    for page in analyzer.analyze(path="invoice.pdf"):
        report.add(page)
    report.close()
    report.summary()

Rows go to ``run.layout.parquet`` and ``run.tables.parquet`` beside ``run.parquet`` (the
classifier's). An element is flagged for review below ``min_confidence`` (its own score) or
``min_margin`` (its score minus its query's best other class; see
[`probhook.elements`][probhook.elements]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from probhook.integrations.deepdoctection.analyzer import UsageError, read_config
from probhook.integrations.deepdoctection.detectors import MODELS

DETECTOR_ARCHITECTURES = ("TableTransformerForObjectDetection", "DeformableDetrForObjectDetection")
"""What deepdoctection's ``HFDetrDerivedDetector`` loads (and probhook maps: ``MODELS``)."""
assert set(DETECTOR_ARCHITECTURES) <= set(MODELS)
TABLES = ("table", "table_rotated")
"""The layout categories the table-structure detector runs on (as deepdoctection's analyzer)."""


def read_detector_folder(path: Path, option: str) -> dict[int, str]:
    """The categories (``{1: label, ...}``) of a detector folder, checked without loading it:
    ``config.json`` of a Table Transformer or Deformable DETR whose labels are deepdoctection
    categories, ``model.safetensors`` and ``preprocessor_config.json``."""
    import deepdoctection as dd

    if not path.is_dir():
        kind = "is a file" if path.exists() else "no such folder"
        raise UsageError(f"{option} {path}: {kind} (expected a detector model folder with "
                         "config.json, model.safetensors, preprocessor_config.json)")  # fmt: skip
    config = read_config(path, f"{option} {path}: no config.json (expected a detector model "
                         "folder)")  # fmt: skip
    architectures = config.get("architectures") or []
    if not set(architectures) & set(DETECTOR_ARCHITECTURES):
        raise UsageError(f"{option} {path} holds {architectures or 'no architecture'}, not one "
                         f"of {', '.join(DETECTOR_ARCHITECTURES)}")  # fmt: skip
    for name in ("model.safetensors", "preprocessor_config.json"):
        if not (path / name).is_file():
            raise UsageError(f"{option} {path} has no {name}")
    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    for label in labels:
        try:
            dd.get_type(label)
        except KeyError:
            raise UsageError(f"{option} {path}: label {label!r} is not a deepdoctection "
                             "category (layout: text, title, table, figure, list, ...; table "
                             "structure: row, column, spanning, ...)") from None  # fmt: skip
    if not labels:
        raise UsageError(f"{option} {path}: config.json has no id2label")
    return {i + 1: label for i, label in enumerate(labels)}


def check_detectors(layout: Path | None, tables: Path | None) -> dict[str, dict[int, str]]:
    """The categories of each detector folder given (``layout``, ``tables``), checked without
    loading a model: each folder ([`read_detector_folder`][read_detector_folder]), and a table
    model only behind a layout model that finds tables."""
    folders = [("layout", "--layout-model", layout), ("tables", "--table-model", tables)]
    categories = {name: read_detector_folder(p, opt) for name, opt, p in folders if p is not None}
    if tables is not None and not set(categories.get("layout", {}).values()) & set(TABLES):
        raise UsageError("--table-model finds rows, columns and cells inside tables: give a "
                         "--layout-model whose labels include table")  # fmt: skip
    return categories


def detector_services(layout: Path | None, tables: Path | None) -> list[tuple[str, Any]]:
    """The layout service (``ImageLayoutService``, each element with its own image, as
    deepdoctection's analyzer has it) and the table-structure service over its tables
    (``SubImageLayoutService``), named ``layout`` and ``tables``."""
    import deepdoctection as dd

    categories = check_detectors(layout, tables)
    services = []
    for name, folder in (("layout", layout), ("tables", tables)):
        if folder is None:
            continue
        files = [folder / n for n in ("config.json", "model.safetensors",
                                      "preprocessor_config.json")]  # fmt: skip
        detector = dd.HFDetrDerivedDetector(*files, categories[name])
        if name == "layout":
            service = dd.ImageLayoutService(detector, to_image=True, crop_image=True)
        else:
            service = dd.SubImageLayoutService(detector, list(TABLES))
        services.append((name, service))
    return services


def with_detectors(
    analyzer: Any, layout: Path | None, tables: Path | None
) -> tuple[Any, list[tuple[str, Any]]]:
    """A pipe that runs the detector services (see [`detector_services`][detector_services])
    before ``analyzer``'s own components, with the same page parser and the pixels no
    component reads skipped; and the services by name, each to be captured on its own (the
    command line's engines both do: one rows file or folder per detector)."""
    import deepdoctection as dd

    from probhook.integrations.deepdoctection.pixels import skip_unused_pixels

    services = detector_services(layout, tables)
    pipe = dd.DoctectionPipe([s for _, s in services] + list(analyzer.pipe_component_list),
                             page_parsing_service=analyzer.page_parser)  # fmt: skip
    return skip_unused_pixels(pipe), services


@dataclass
class ElementReport:
    """The detectors of a run: their captures (one rows file each) and the per-page report."""

    analyzer: Any
    captures: list[tuple[str, Any]]
    stream: TextIO
    shown: int = 5
    min_confidence: float | None = 0.9
    min_margin: float | None = None
    elements: int = 0
    flagged: int = 0
    paths: list[Path] = field(default_factory=list)

    @classmethod
    def build(cls, analyzer: Any, layout: Path | None, tables: Path | None, *, out: Path,
              stream: TextIO, **options: Any) -> ElementReport:  # fmt: skip
        """The detectors in front of ``analyzer``'s components, each captured to a file beside
        ``out`` (``<stem>.layout<suffix>``, ``<stem>.tables<suffix>``)."""
        from probhook import capture_probs

        pipe, services = with_detectors(analyzer, layout, tables)
        paths = [out.with_name(f"{out.stem}.{name}{out.suffix}") for name, _ in services]
        captures = [(name, capture_probs(service, sink=path))
                    for (name, service), path in zip(services, paths, strict=True)]  # fmt: skip
        return cls(pipe, captures, stream, paths=paths, **options)

    def start(self) -> None:
        for _, cap in self.captures:
            cap.start()

    def close(self) -> None:
        """Close every capture (each rows file complete)."""
        for _, cap in self.captures:
            cap.close()

    def files(self) -> list[tuple[Path, int]]:
        """Each detector's rows file and how many rows it holds."""
        return [(path, len(cap)) for (_, cap), path in zip(self.captures, self.paths, strict=True)]

    def review(self, dist: Any) -> bool:
        """Whether a person should check this element."""
        low = self.min_confidence is not None and dist.confidence < self.min_confidence
        return low or (self.min_margin is not None and dist.margin < self.min_margin)

    def add(self, page: Any) -> None:
        """Report one page: per detector, its elements and the least confident ones."""
        for name, cap in self.captures:
            elements = cap.elements(page)
            flagged = [d for d in elements if self.review(d)]
            self.elements, self.flagged = self.elements + len(elements), self.flagged + len(flagged)
            if not elements:
                print(f"    {name}: no elements", file=self.stream)
                continue
            mean = sum(d.confidence for d in elements) / len(elements)
            print(f"    {name}: {len(elements)} elements, mean confidence {mean:.2f}, "
                  f"{len(flagged)} to review", file=self.stream)  # fmt: skip
            self._lowest(elements)

    def _lowest(self, elements: Sequence[Any]) -> None:
        for dist in sorted(elements, key=lambda d: d.confidence)[: self.shown]:
            others = [(label, p) for label, p in dist.top_k(3) if label != dist.predicted]
            runner_up = f"  (then {others[0][0]} {others[0][1]:.2f})" if others else ""
            box = ",".join(str(v) for v in dist.box)
            mark = "  <- review" if self.review(dist) else ""
            line = f"      {dist.predicted!s:<16} {dist.confidence:.2f}  at [{box}]"
            print(f"{line}{runner_up}{mark}", file=self.stream)

    def summary(self) -> None:
        """Totals over every page added, and where the rows are: the files this run wrote (a
        detector that found nothing leaves an earlier run's file as it was: said so)."""
        written = self.files()
        files = ", ".join(str(p) for p, rows in written if rows and p.exists())
        print(f"{self.elements} elements detected; {self.flagged} to review"
              f"{f'; element rows: {files}' if files else ''}", file=self.stream)  # fmt: skip
        for path, _ in ((p, n) for p, n in written if not n and p.exists()):
            print(f"warning: {path} is an earlier run's (this run found no elements there): "
                  "probhook report would read it with this run's rows; move or remove it",
                  file=self.stream)  # fmt: skip
