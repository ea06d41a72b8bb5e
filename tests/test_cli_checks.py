"""The command line's checks before any document is read (paths, the model folder, --help), and
inputs that must be reported rather than classified twice or passed over silently."""

import json
import shutil
import subprocess
import sys

import pytest
from pypdf import PdfWriter

from probhook import demo, load
from probhook.cli import main

MEMO = demo.SAMPLES_DIR / "memo_1.pdf"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def usage_error(capsys, *argv):
    """The one ``probhook: error:`` line of a run refused before any document."""
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, ""), err
    lines = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("probhook: error: ")
    return lines[0]


def test_plot_naming_an_input_document_is_refused_and_left_alone(tmp_path, capsys):
    pdf = tmp_path / "scan.pdf"
    shutil.copy(MEMO, pdf)
    before = pdf.read_bytes()
    for given in (pdf, tmp_path):  # the document itself, and its folder
        line = usage_error(capsys, "run", given, "--out", tmp_path / "r.parquet", "--plot", pdf)
        assert f"--plot {pdf} is one of the inputs" in line
    assert pdf.read_bytes() == before
    assert not (tmp_path / "r.parquet").exists()


def test_output_suffixes_are_checked_as_the_writers_read_them(tmp_path, capsys):
    line = usage_error(capsys, "run", MEMO, "--out", tmp_path / "rows.PARQUET")
    assert line.endswith("must end in .parquet or .arrows (in lower case: rows.parquet)")
    line = usage_error(capsys, "run", MEMO, "--out", tmp_path / "r.parquet",
                       "--plot", tmp_path / "c.PNG")  # fmt: skip
    assert "(in lower case: c.png)" in line


def test_a_folder_given_as_out_and_a_file_given_as_model_are_named(tmp_path, capsys):
    line = usage_error(capsys, "run", MEMO, "--out", f"{tmp_path}/new/")
    assert f"--out {tmp_path}/new/ ends in /: a folder name: give a file name such as " in line
    assert not (tmp_path / "new").exists()
    line = usage_error(capsys, "run", MEMO, "--model", MEMO, "--out", tmp_path / "r.parquet")
    assert f"--model {MEMO} is a file: give the Hugging Face model folder" in line
    config = demo.MODEL_DIR / "config.json"
    line = usage_error(capsys, "run", MEMO, "--model", config, "--out", tmp_path / "r.parquet")
    assert f"(its folder: {demo.MODEL_DIR})" in line


def test_help_shows_every_default_value_even_zero(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "GPUs each worker asks for (default: 0.0)" in text
    assert "--engine ray: workers (default: 1)" in text


def test_a_document_given_twice_is_classified_once(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    pdf = folder / "memo.pdf"
    shutil.copy(MEMO, pdf)
    (folder / "link.pdf").symlink_to(pdf)
    out = tmp_path / "rows.parquet"
    code, stdout, err = run_cli(capsys, "run", pdf, folder, pdf, "--out", out, "-q",
                                "--format", "json")  # fmt: skip
    assert code == 0
    assert len(stdout.splitlines()) == 1  # one page, once
    assert f"warning: {folder / 'link.pdf'} is {pdf} again: classified once" in err
    assert err.count("again: classified once") == 3  # the link, the folder's copy, the repeat
    assert len(load(out)) == 1
    assert json.loads(stdout)["document"] == str(pdf)


def test_a_pdf_without_pages_is_reported_and_a_broken_one_is_named(tmp_path, capsys):
    empty, broken = tmp_path / "empty.pdf", tmp_path / "broken.pdf"
    PdfWriter().write(empty)
    broken.write_bytes(b"%PDF-1.4 truncated")
    out = tmp_path / "rows.parquet"
    code, stdout, err = run_cli(capsys, "run", empty, broken, MEMO, "--out", out, "-q")
    assert code == 0
    assert f"warning: skipped {empty}: no pages (deepdoctection read 0 pages from it)" in err
    assert f"warning: skipped {broken}: unreadable (PdfError: stream broken.pdf: " in err
    assert "_io.BytesIO" not in err
    assert "skipped 2 inputs" in stdout
    assert "1 pages classified in 1 documents" in stdout


def test_loading_is_announced_unless_quiet(tmp_path):
    """A child process: the message comes before deepdoctection is imported."""
    command = [sys.executable, "-m", "probhook", "run", str(MEMO), "--out",
               str(tmp_path / "r.parquet")]  # fmt: skip
    loud = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    first = next(line for line in loud.stderr.splitlines() if not line.startswith("note: "))
    assert first == f"loading deepdoctection and the model in {demo.MODEL_DIR}..."
    quiet = subprocess.run([*command, "-q"], capture_output=True, text=True, timeout=300)
    assert "loading" not in quiet.stderr
