import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pypdf import PdfWriter

from probhook import demo, load
from probhook.cli import collect_inputs, main, ocr_available

SAMPLES = sorted(demo.SAMPLES_DIR.glob("*.pdf"))
DERIVED = ["predicted", "confidence", "margin", "entropy"]


def run_cli(capsys, *argv):
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_runs_as_a_subprocess_and_writes_one_row_per_page(tmp_path):
    out = tmp_path / "demo.parquet"
    start = time.perf_counter()
    plot = tmp_path / "c.png"
    result = subprocess.run(
        [sys.executable, "-m", "probhook", "demo", "--out", str(out), "--plot", str(plot)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["document", "page", "predicted", "conf"]
    pages = sum(1 for line in lines if line.endswith(".pdf") is False and ".pdf " in line)
    assert pages == 13  # 11 one-page PDFs and one two-page PDF
    assert "13 pages classified in 12 documents" in result.stdout
    table = pq.read_table(out)
    assert table.num_rows == 13
    assert sorted(set(table.column("file_name").to_pylist())) == sorted(
        f"{p.stem}_{i}.pdf"
        for p in SAMPLES
        for i in ((1, 2) if p.stem == "letter_and_invoice" else (1,))
    )
    assert plot.stat().st_size > 1000
    assert "Traceback" not in result.stderr
    assert "Warning" not in result.stderr  # no Python warning text, no library noise
    print(f"probhook demo took {elapsed:.1f} s")  # reported, not asserted (shared machine)


def test_run_on_a_mixed_folder_classifies_good_pages_and_reports_bad_inputs(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("letter_1.pdf", "invoice_1.pdf"):
        shutil.copy(demo.SAMPLES_DIR / name, folder / name)
    writer = PdfWriter(clone_from=demo.SAMPLES_DIR / "memo_1.pdf")
    writer.encrypt("secret")
    writer.write(folder / "locked.pdf")
    (folder / "notes.txt").write_text("not a document")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    out = tmp_path / "rows.parquet"
    code, stdout, err = run_cli(capsys, "run", folder, "--out", out, "--quiet")
    assert code == 0
    assert "2 pages classified in 2 documents" in stdout
    assert "skipped 3 inputs" in stdout
    assert "locked.pdf: encrypted PDF" in err
    assert "notes.txt: not a PDF or image (.txt)" in err
    assert "broken.pdf: unreadable" in err
    assert "toy demo model" in err  # no --model: the run says which model it uses
    assert "progress" not in err  # --quiet
    rows = pq.read_table(out)
    assert sorted(rows.column("file_name").to_pylist()) == ["invoice_1_1.pdf", "letter_1_1.pdf"]
    predicted = dict(
        zip(
            rows.column("file_name").to_pylist(), rows.column("predicted").to_pylist(), strict=False
        )
    )
    assert predicted == {"letter_1_1.pdf": "letter", "invoice_1_1.pdf": "invoice"}


def test_json_lines_progress_lines_and_parquet_columns(tmp_path, capsys):
    docs = [demo.SAMPLES_DIR / "letter_and_invoice.pdf", demo.SAMPLES_DIR / "form_1.pdf"]
    out = tmp_path / "rows.parquet"
    code, stdout, err = run_cli(capsys, "run", *docs, "--out", out, "--format", "json",
                                "--min-margin", "0.99")  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in stdout.splitlines()]  # stdout: JSON lines only
    assert [(Path(r["document"]).name, r["page"]) for r in records] == [
        ("letter_and_invoice.pdf", 1), ("letter_and_invoice.pdf", 2), ("form_1.pdf", 1)
    ]  # fmt: skip
    # not a terminal: plain progress lines on stderr, then the summary there too
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress[-1].startswith("progress: 3/3 pages, 2/2 documents")
    assert "pages/s" in progress[0]
    assert "ETA" in progress[0]
    assert "3 pages classified in 2 documents" in err
    # the Parquet file carries the derived columns, equal to what the JSON lines say
    table = pq.read_table(out)
    assert set(DERIVED) <= set(table.column_names)
    view = load(out)
    assert view.to_pandas().columns.tolist() == table.column_names  # as to_parquet writes it
    by_key = {r["image_id"]: r for r in records}
    for row in table.to_pylist():
        record = by_key[row["key"]]
        probs = np.array([row[f"p_{label}"] for label in view.labels], np.float32)
        assert record["probs"] == {k: float(v) for k, v in zip(view.labels, probs, strict=False)}
        assert row["predicted"] == record["predicted"] == view.labels[int(np.argmax(probs))]
        for name in ("confidence", "margin", "entropy"):
            assert row[name] == pytest.approx(record[name], abs=1e-12)
        assert record["flagged"] == (row["confidence"] < 0.9 or row["margin"] < 0.99)
        assert abs(sum(record["probs"].values()) - 1) < 1e-5


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--out", "x.csv", "--out x.csv: the file name must end in .parquet or .arrows"),
        ("--out", "{tmp}", "is a folder: give a file name such as"),
        ("--out", "{tmp}/a_file/x.parquet", "cannot write there"),
        ("--out", "/proc/probhook/x.parquet", "cannot write there"),
        ("--plot", "plot.txt", "--plot plot.txt: the file name must end in .png or .svg"),
        ("--plot", "{tmp}/rows.parquet", "the file name must end in .png"),
    ],
)
def test_output_paths_are_checked_before_any_document(tmp_path, capsys, option, value, message):
    (tmp_path / "a_file").write_text("a file, not a folder")
    args = ["run", SAMPLES[0], "--out", tmp_path / "rows.parquet"]
    code, stdout, err = run_cli(capsys, *args, option, value.format(tmp=tmp_path))
    assert code == 2
    assert stdout == ""  # nothing classified, no table header
    lines = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("probhook: error: ")
    assert message in lines[0]


def test_model_folders_without_weights_or_with_wrong_label_count(tiny, tmp_path, capsys):
    source = tiny("layoutlm").path
    capsys.readouterr()  # the fixture's own output
    no_weights = tmp_path / "no-weights"
    shutil.copytree(source, no_weights)
    (no_weights / "model.safetensors").unlink()
    wrong = tmp_path / "wrong-labels"
    shutil.copytree(source, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["id2label"] = {"0": "letter", "1": "invoice", "2": "form"}  # the weights have 4
    (wrong / "config.json").write_text(json.dumps(config))
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(source, no_tokenizer)
    for name in ("tokenizer.json", "vocab.txt"):
        (no_tokenizer / name).unlink()
    cases = {
        no_weights: "has no weights (expected one of model.safetensors",
        wrong: "config.json names 3 labels but the classifier weights have 4 outputs",
        no_tokenizer: "has no tokenizer files",
        tmp_path / "nope": "no such folder",
        tmp_path: "has no config.json",
    }
    for folder, message in cases.items():
        code, stdout, err = run_cli(capsys, "run", SAMPLES[0], "--model", folder,
                                    "--out", tmp_path / "r.parquet")  # fmt: skip
        assert (code, stdout) == (2, ""), err
        assert len(err.splitlines()) == 1, err  # one line, no transformers traceback
        assert err.startswith("probhook: error: ")
        assert message in err
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(
        json.dumps({"architectures": ["BertModel"], "model_type": "bert"})
    )
    assert main(["run", str(SAMPLES[0]), "--model", str(encoder)]) == 2
    assert "not a sequence classifier" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-confidence", "5"], "argument --min-confidence: must be between 0 and 1, got 5"),
        (["--min-margin", "-1"], "argument --min-margin: must be between 0 and 1, got -1"),
        (["--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["--format", "csv"], "argument --format: invalid choice: 'csv'"),
    ],
)
def test_option_ranges_are_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(SAMPLES[0]), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    from probhook import __version__

    assert capsys.readouterr().out.strip() == f"probhook {__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "(default: 0.9)" in help_text  # defaults shown
    assert "(default: probhook-results.parquet)" in help_text
    assert "-q, --quiet" in help_text
    assert "exit status:" in help_text
    assert "``" not in help_text
    assert ":mod:" not in help_text
    assert main([]) == 2
    assert "``" not in capsys.readouterr().out


def test_every_input_skipped_says_so_without_noise(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    (folder / "notes.txt").write_text("not a document")
    out = tmp_path / "rows.parquet"
    # a child process with every Python warning shown: pytest would otherwise swallow them
    result = subprocess.run(
        [sys.executable, "-W", "default", "-m", "probhook", "run", str(folder), "--out", str(out),
         "--plot", str(tmp_path / "c.png")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    stdout, err = result.stdout, result.stderr
    assert result.returncode == 1
    assert "no page classified" in stdout
    assert "skipped 2 inputs" in stdout
    assert "no rows file written" in stdout
    for noise in ("all rows", "nan", "plot:"):
        assert noise not in stdout
    for noise in ("Warning", "Traceback", "Cannot close object"):
        assert noise not in err
    assert not out.exists()
    assert not (tmp_path / "c.png").exists()


def test_image_input_without_ocr_engine_is_explained(tmp_path, capsys):
    image = tmp_path / "scan.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    refused = collect_inputs([image], ocr=False)
    assert refused.documents == []
    assert refused.skipped == [(image, "image input needs an OCR engine: install tesseract")]
    assert collect_inputs([image], ocr=True).documents == [image]
    if not ocr_available():  # this machine: the run says so and ends with nothing to do
        assert main(["run", str(image), "--out", str(tmp_path / "x.parquet")]) == 1
        err = capsys.readouterr().err
        assert "scan.png: image input needs an OCR engine: install tesseract" in err
        assert "nothing to classify" in err


def test_missing_input_path_is_a_usage_error(tmp_path, capsys):
    code, stdout, err = run_cli(
        capsys, "run", tmp_path / "nope.pdf", "--out", tmp_path / "r.parquet"
    )
    assert (code, stdout) == (2, "")
    assert err.strip().endswith(f"probhook: error: no such file or folder: {tmp_path / 'nope.pdf'}")


def test_own_model_dir_is_used(tiny, tmp_path, capsys):
    model = tiny("layoutlm")
    code, out, err = run_cli(capsys, "run", demo.SAMPLES_DIR / "form_1.pdf", "--model", model.path,
                             "--out", tmp_path / "r.arrows", "--top-k", "4")  # fmt: skip
    assert code == 0
    assert "top-4" in out
    assert "toy demo model" not in err
    assert len(load(tmp_path / "r.arrows")) == 1


def _interrupted_run(tmp_path, signum):
    """Run the command line as a child on 130 pages (copies of the samples), read three pages'
    JSON lines, pause longer than the sink's ``flush_seconds`` (<= 1 s), send ``signum``."""
    import threading

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(10):
        for sample in SAMPLES:
            shutil.copy(sample, folder / f"{k:02d}_{sample.name}")
    out = tmp_path / "rows.parquet"
    child = subprocess.Popen(
        [sys.executable, "-m", "probhook", "run", str(folder), "--out", str(out),
         "--format", "json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    watchdog = threading.Timer(240, child.kill)  # a hung child fails the test, never the suite
    watchdog.start()
    try:
        before = []
        while len(before) < 3 and (line := child.stdout.readline()):
            before.append(json.loads(line))
        assert len(before) == 3, child.communicate()[1]
        time.sleep(1.5)
        child.send_signal(signum)
        rest, err = child.communicate(timeout=200)
    finally:
        watchdog.cancel()
    after = [json.loads(line) for line in rest.splitlines()]
    return child.returncode, before, after, err, out


def _rows_by_key(out):
    view = load(out)
    keys = view.keys
    assert len(keys) == len(set(keys))  # every row exactly once
    return {key: dist for key, dist in zip(keys, view.distributions(), strict=False)}


def _same_probs(record, dist):
    return record["probs"] == {
        label: float(p) for label, p in zip(dist.labels, dist.probs, strict=False)
    }


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_sigterm_or_ctrl_c_stop_after_the_page_with_a_complete_file_and_a_summary(tmp_path, name):
    import signal

    signum = getattr(signal, name)
    code, before, after, err, out = _interrupted_run(tmp_path, signum)
    assert code == 128 + signum, err
    assert "Traceback" not in err
    assert f"interrupted by {name}" in err
    assert len(before) + len(after) < 130  # it stopped early
    rows = _rows_by_key(out)
    printed = before + after  # SIGTERM: the run ends after the current page, all printed
    assert set(rows) == {r["image_id"] for r in printed}
    assert all(_same_probs(r, rows[r["image_id"]]) for r in printed)  # bit-exact
    assert set(DERIVED) <= set(pq.read_table(out).column_names)  # finished as on a normal end


def test_sigkill_leaves_a_file_with_every_page_finished_before_the_pause(tmp_path):
    import signal

    code, before, _after, _err, out = _interrupted_run(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    rows = _rows_by_key(out)  # whatever is there loads
    assert {r["image_id"] for r in before} <= set(rows)
    assert all(_same_probs(r, rows[r["image_id"]]) for r in before)  # bit-exact


def test_non_finite_rows_are_flagged_without_a_prediction():
    from probhook.cli_output import JsonWriter, PageResult, TableWriter, Totals, summary_lines
    from probhook.distribution import Distribution

    labels = ("letter", "invoice")
    bad = Distribution(np.array([np.nan, np.nan], np.float32), labels, key="p1")
    good = Distribution(np.array([0.25, 0.75], np.float32), labels, key="p2")
    results = [PageResult(Path("a.pdf"), i + 1, f"p{i + 1}", d, 0.9) for i, d in
               enumerate((bad, good))]  # fmt: skip
    assert results[0].flagged
    line = TableWriter(["a.pdf"], list(labels), 2).line(results[0])
    assert "NaN or inf: no prediction" in line
    assert line.endswith("<- review")
    record = json.loads(JsonWriter().line(results[0]))  # valid JSON: no NaN in it
    assert record["predicted"] is None
    assert record["flagged"] is True
    assert record["probs"] == {"letter": None, "invoice": None}
    totals = Totals()
    for result in results:
        totals.add(result)
    summary = "\n".join(summary_lines(totals, 0, Path("rows.parquet"), None))
    assert "2 pages classified in 1 documents; mean confidence 0.75; 2 flagged" in summary
    assert "1 pages had NaN or inf in the model output" in summary
    assert "nan" not in summary.lower().replace("nan or inf", "")


def test_unreadable_reasons_carry_no_object_addresses():
    from probhook.integrations.deepdoctection.analyzer import reason

    text = reason(ValueError("stream <_io.BytesIO object at 0x7f3a2b1c> has no trailer"))
    assert text == "unreadable (ValueError: stream <_io.BytesIO object> has no trailer)"
