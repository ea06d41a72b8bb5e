import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from pypdf import PdfWriter

from probhook import demo
from probhook.cli import collect_inputs, main, ocr_available

SAMPLES = sorted(demo.SAMPLES_DIR.glob("*.pdf"))


def test_demo_runs_as_a_subprocess_and_writes_one_row_per_page(tmp_path):
    out = tmp_path / "demo.parquet"
    start = time.perf_counter()
    plot = tmp_path / "c.png"
    result = subprocess.run(
        [sys.executable, "-m", "probhook", "demo", "--out", str(out), "--plot", str(plot)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
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
    code = main(["run", str(folder), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "2 pages classified in 2 documents" in captured.out
    assert "skipped 3 inputs" in captured.out
    assert "locked.pdf: encrypted PDF" in captured.err
    assert "notes.txt: not a PDF or image (.txt)" in captured.err
    assert "broken.pdf: unreadable" in captured.err
    rows = pq.read_table(out)
    assert sorted(rows.column("file_name").to_pylist()) == ["invoice_1_1.pdf", "letter_1_1.pdf"]
    predicted = dict(
        zip(
            rows.column("file_name").to_pylist(),
            rows.to_pandas()[["p_letter", "p_invoice"]].idxmax(axis=1),
            strict=True,
        )
    )
    assert predicted == {"letter_1_1.pdf": "p_letter", "invoice_1_1.pdf": "p_invoice"}


def test_missing_path_and_bad_model_dirs_are_usage_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.pdf")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["run", str(SAMPLES[0]), "--model", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(
        json.dumps({"architectures": ["BertModel"], "model_type": "bert"})
    )
    assert main(["run", str(SAMPLES[0]), "--model", str(encoder)]) == 2
    assert "not a sequence classifier" in capsys.readouterr().err


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


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "probhook" in capsys.readouterr().out


def test_own_model_dir_is_used(tiny, tmp_path, capsys):
    model = tiny("layoutlm")
    code = main(["run", str(demo.SAMPLES_DIR / "form_1.pdf"), "--model", str(model.path),
                 "--out", str(tmp_path / "r.parquet"), "--top-k", "4"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "top-4" in out
    assert Path(tmp_path / "r.parquet").exists()
