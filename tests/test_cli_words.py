"""The command line with word classifiers: text-only models (BERT) read the page's words, JSON
lines per page, a reader leaving stdout, and no claim of a rows file that was not written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfWriter

import probhook
from probhook import demo, load
from probhook.cli import main
from probhook.testing import build_token_model

PDFS = [demo.SAMPLES_DIR / "form_1.pdf", demo.SAMPLES_DIR / "invoice_1.pdf"]


@pytest.fixture(scope="module")
def bert_words(tmp_path_factory):
    return build_token_model("bert", tmp_path_factory.mktemp("bert-words"))


@pytest.fixture(scope="module")
def layoutlm_words(tmp_path_factory):
    return build_token_model("layoutlm", tmp_path_factory.mktemp("layoutlm-words"))


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_text_only_token_model_tags_every_word_of_each_page(bert_words, tmp_path, capsys):
    out = tmp_path / "words.parquet"
    code, stdout, err = run_cli(capsys, "run", *PDFS, "--model", bert_words.path, "--out", out,
                                "-q")  # fmt: skip
    assert code == 0, err
    assert "no words" not in stdout
    rows = load(out)
    assert len(rows) > 50
    assert {Path(p).name for p in rows.column("location")} == {p.name for p in PDFS}
    assert f"{len(rows)} words on 2 pages in 2 documents" in stdout
    assert stdout.rstrip().endswith(f"all rows: {out}")


def test_a_text_only_page_model_reads_each_page_s_own_words(tiny, tmp_path, capsys):
    """Without the page's words every page is classified from empty text: one distribution."""
    pdfs = sorted(demo.SAMPLES_DIR.glob("*_1.pdf"))
    out = tmp_path / "pages.parquet"
    code, _, err = run_cli(capsys, "run", *pdfs, "--model", tiny("bert").path, "--out", out, "-q")
    assert code == 0, err
    probs = load(out).probs
    assert len(probs) == len(pdfs)
    assert len({tuple(np.round(p, 6)) for p in probs}) == len(pdfs)


def test_no_rows_file_is_claimed_when_none_was_written(layoutlm_words, tmp_path, capsys):
    blank = tmp_path / "blank.pdf"
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    writer.write(blank)
    out = tmp_path / "words.parquet"
    code, stdout, _ = run_cli(capsys, "run", blank, "--model", layoutlm_words.path, "--out", out,
                              "-q")  # fmt: skip
    assert code == 1
    assert "blank.pdf page 1: no words (not classified)" in stdout
    assert "no rows file written" in stdout
    assert "all rows" not in stdout
    assert not out.exists()


def test_json_lines_give_every_word_of_each_page(layoutlm_words, tmp_path, capsys):
    out = tmp_path / "words.parquet"
    code, stdout, err = run_cli(capsys, "run", *PDFS, "--model", layoutlm_words.path, "--out", out,
                                "--format", "json", "--min-confidence", "0.5")  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in stdout.splitlines()]  # stdout: JSON lines only
    assert [(Path(r["document"]).name, r["page"]) for r in records] == [
        ("form_1.pdf", 1), ("invoice_1.pdf", 1)
    ]  # fmt: skip
    assert "words on 2 pages" in err  # the summary goes to stderr
    rows = {d.key: d for d in load(out).distributions()}
    words = [w for r in records for w in r["words"]]
    assert len(words) == len(rows)
    for record in records:
        assert record["flagged"] == sum(w["flagged"] for w in record["words"])
        for word in record["words"]:
            dist = rows[word["word_id"]]
            assert word["word"] == dist.meta["word"]
            assert word["probs"] == dist.as_dict()
            assert word["predicted"] == dist.predicted
            assert word["flagged"] == (dist.confidence < 0.5)


def test_a_reader_leaving_stdout_ends_a_word_run_as_sigpipe(layoutlm_words, tmp_path):
    out = tmp_path / "words.parquet"
    samples = sorted(demo.SAMPLES_DIR.glob("*.pdf"))
    root = str(Path(probhook.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.Popen(
        [sys.executable, "-m", "probhook", "run", *map(str, samples), "--model",
         str(layoutlm_words.path), "--out", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + 13, err
    assert "words, mean confidence" in first
    for noise in ("skipped", "BrokenPipeError", "Traceback", "Exception ignored"):
        assert noise not in err
    assert "interrupted by SIGPIPE" in err
    pages = {(d.meta["location"], d.meta["page_number"]) for d in load(out).distributions()}
    assert 1 <= len(pages) < len(samples)
