"""The command line's word-classifier pieces: a token model folder becomes deepdoctection's own
analyzer with a token service; each page prints its least confident words."""

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from probhook import capture_probs, demo
from probhook.integrations.deepdoctection.analyzer import (
    UsageError,
    build_word_analyzer,
    read_model_dir,
    read_model_folder,
)
from probhook.integrations.deepdoctection.word_table import WordTable
from probhook.testing import build_token_model


def test_token_model_folder_runs_in_the_analyzer_and_reports_words(tiny, tmp_path):
    model = build_token_model("layoutlm", tmp_path / "words-model")
    folder = read_model_folder(model.path)
    assert (folder.task, folder.wrapper, folder.max_length) == (
        "token", "HFLayoutLmTokenClassifier", 64
    )  # fmt: skip
    assert folder.labels == list(model.labels)
    assert read_model_folder(tiny("layoutlm").path).task == "sequence"
    with pytest.raises(UsageError, match="token classifier"):
        read_model_dir(model.path)  # the page-classifier path refuses it clearly

    analyzer = build_word_analyzer(folder, ocr=False)
    out = io.StringIO()
    table = WordTable(out, shown=3, min_confidence=0.5)
    rows_file = tmp_path / "words.parquet"
    pdfs = [demo.SAMPLES_DIR / "form_1.pdf", demo.SAMPLES_DIR / "invoice_1.pdf"]
    seen = []
    with capture_probs(analyzer, sink=rows_file) as cap:
        for pdf in pdfs:
            flow = analyzer.analyze(path=str(pdf))
            flow.reset_state()
            for page in flow:
                words = cap.words(page)
                table.add(page, words)
                seen.append((page, words))
    table.summary(skipped=0, rows_file=rows_file)
    lines = out.getvalue().splitlines()
    total = 0
    for page, words in seen:
        assert words, "the PDF's text layer gives words"
        total += len(words)
        texts = {w.annotation_id: w.characters for w in page.words}
        assert all(d.meta["word"] == texts[d.key] for d in words)
        name = f"{Path(page.location).name} page {page.page_number}:"
        header = next(i for i, line in enumerate(lines) if line.startswith(name))
        assert f"{len(words)} words" in lines[header]
        shown = sorted(words, key=lambda d: d.confidence)[:3]
        for line, dist in zip(lines[header + 1 : header + 4], shown, strict=True):
            assert line.split()[:3] == [dist.meta["word"], dist.predicted, f"{dist.confidence:.2f}"]
            assert line.endswith("<- review") == (dist.confidence < 0.5)
    assert f"{total} words on {len(seen)} pages in 2 documents" in out.getvalue()
    table_rows = pq.read_table(rows_file)
    assert table_rows.num_rows == total
    assert {"word_id", "word", "page_number", "document_id"} <= set(table_rows.column_names)
