"""``probhook run --layout-model DIR --table-model DIR``: element rows beside the classifier's,
and each page's least confident elements on stdout."""

import json

import pytest

from probhook import demo, load
from probhook.cli import main
from probhook.element_view import ElementView
from probhook.testing import CELL_LABELS

PDFS = [demo.SAMPLES_DIR / "invoice_1.pdf", demo.SAMPLES_DIR / "letter_and_invoice.pdf"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_detectors_write_element_rows_and_report_the_least_confident(detector, tmp_path,
                                                                      capsys):  # fmt: skip
    layout, cells = detector("deformable_detr"), detector("table_transformer")
    out = tmp_path / "run.parquet"
    code, stdout, stderr = run_cli(capsys, "run", *PDFS, "--layout-model", layout.path,
                                   "--table-model", cells.path, "--out", out, "--top-k", 2,
                                   "--min-confidence", 0.5, "-q")  # fmt: skip
    assert code == 0, stderr
    pages = load(out)
    layout_rows, cell_rows = (
        load(tmp_path / "run.layout.parquet"),
        load(tmp_path / "run.tables.parquet"),
    )
    assert len(pages) == 3
    assert isinstance(layout_rows, ElementView)
    assert isinstance(cell_rows, ElementView)
    assert cell_rows.labels == (*CELL_LABELS, "no_object")
    assert set(layout_rows.column("image_id")) == set(pages.column("image_id"))
    for page_id in pages.column("image_id"):
        shown = layout_rows.elements(page_id)
        flagged = sum(d.confidence < 0.5 for d in shown)
        assert f"layout: {len(shown)} elements, mean confidence " in stdout
        assert f", {flagged} to review" in stdout
    lowest = min(layout_rows.elements(pages.column("image_id")[0]), key=lambda d: d.confidence)
    assert f"{lowest.predicted:<16} {lowest.confidence:.2f}  at [" in stdout
    assert f"{len(layout_rows) + len(cell_rows)} elements detected" in stdout
    # the rows files carry the element measures as the files read them back
    derived = layout_rows.to_pandas()
    assert (derived["predicted"] == derived["category"]).all()


def test_json_output_stays_json_with_detectors(detector, tmp_path, capsys):
    layout = detector("deformable_detr")
    options = ["--out", tmp_path / "r.parquet", "--format", "json", "-q"]
    code, stdout, stderr = run_cli(capsys, "run", PDFS[0], "--layout-model", layout.path, *options)
    assert code == 0, stderr
    assert [json.loads(line)["page"] for line in stdout.splitlines()] == [1]
    assert "layout: " in stderr
    assert "elements detected" in stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, tmp: ["--table-model", d("table_transformer").path],
         "give a --layout-model whose labels include table"),
        (lambda d, tmp: ["--layout-model", tmp], "no config.json"),
        (lambda d, tmp: ["--layout-model", tmp / "gone"], "gone: no such folder (expected a "
         "detector model folder"),
        (lambda d, tmp: ["--layout-model", d("deformable_detr").path / "config.json"],
         "config.json: is a file (expected a detector model folder"),
        (lambda d, tmp: ["--layout-model", demo.MODEL_DIR], "not one of TableTransformer"),
        (lambda d, tmp: ["--layout-model", d("table_transformer", labels=["text", "x"]).path],
         "label 'x' is not a deepdoctection category"),
    ],
    ids=["tables-without-layout", "no-config", "missing", "a-file", "a-classifier",
         "unknown-label"],
)  # fmt: skip
def test_detector_folders_are_checked_before_any_document(detector, tmp_path, capsys, make,
                                                          message):  # fmt: skip
    code, _, stderr = run_cli(capsys, "run", PDFS[0], *make(detector, tmp_path),
                              "--out", tmp_path / "r.parquet")  # fmt: skip
    assert code == 2
    assert message in stderr
    assert not (tmp_path / "r.parquet").exists()


@pytest.mark.parametrize("stale", ["run.tables.parquet", "run.tables.parquet.partial.arrows"])
def test_an_earlier_run_s_head_file_beside_out_is_refused_before_any_document(
    detector, tmp_path, capsys, stale
):
    """``run.tables.parquet`` (or its stream, the run killed) left by an earlier run with a
    table model: a run without one would not replace it, and ``probhook report run.parquet``
    would read it as this run's."""
    layout = detector("deformable_detr")
    (tmp_path / stale).write_bytes(b"an earlier run's rows")
    out = tmp_path / "run.parquet"
    code, stdout, stderr = run_cli(capsys, "run", PDFS[0], "--layout-model", layout.path,
                                   "--out", out, "-q")  # fmt: skip
    assert code == 2
    assert stderr.count("probhook: error: ") == 1
    assert f"{stale} beside it holds an earlier run's rows" in stderr
    assert not out.exists()
    assert not (tmp_path / "run.layout.parquet").exists()
    assert stdout == ""


def test_a_detector_that_found_nothing_does_not_claim_an_earlier_run_s_file(detector, tmp_path,
                                                                           capsys):  # fmt: skip
    """The earlier run's ``run.layout.parquet`` stays where this run wrote no element row: the
    summary does not list it as this run's, and says whose it is."""
    blind = detector("deformable_detr", class_bias=-40.0)  # no query passes the threshold
    (tmp_path / "run.layout.parquet").write_bytes(b"an earlier run's rows")
    out = tmp_path / "run.parquet"
    with pytest.warns(RuntimeWarning, match="no row was written"):
        code, stdout, stderr = run_cli(capsys, "run", PDFS[0], "--layout-model", blind.path,
                                       "--out", out, "-q")  # fmt: skip
    assert code == 0, stderr
    assert "0 elements detected; 0 to review\n" in stdout
    assert "element rows:" not in stdout
    assert f"warning: {tmp_path / 'run.layout.parquet'} is an earlier run's" in stdout
