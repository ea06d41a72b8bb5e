"""The command line with a word classifier: a token model folder becomes deepdoctection's own
analyzer with a token service; every word is a row; each page prints its least confident words."""

import pyarrow.parquet as pq
import pytest

from probhook import demo
from probhook.cli import main
from probhook.integrations.deepdoctection.analyzer import (
    UsageError,
    read_model_dir,
    read_model_folder,
)
from probhook.testing import build_token_model


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    return build_token_model("layoutlm", tmp_path_factory.mktemp("words-model"))


def test_model_folders_say_what_they_classify(word_model, tiny):
    folder = read_model_folder(word_model.path)
    assert (folder.task, folder.wrapper, folder.max_length) == (
        "token", "HFLayoutLmTokenClassifier", 64
    )  # fmt: skip
    assert folder.labels == list(word_model.labels)
    assert read_model_folder(tiny("layoutlm").path).task == "sequence"
    with pytest.raises(UsageError, match="token classifier"):
        read_model_dir(word_model.path)  # the page-classifier reader refuses it clearly


def test_run_with_a_token_model_writes_word_rows_and_lists_unsure_words(
    word_model, tmp_path, capsys
):
    out = tmp_path / "words.parquet"
    pdfs = [demo.SAMPLES_DIR / "form_1.pdf", demo.SAMPLES_DIR / "invoice_1.pdf"]
    args = ["run", *map(str, pdfs), "--model", str(word_model.path), "--out", str(out)]
    code = main([*args, "--quiet", "--min-confidence", "0.5"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    rows = pq.read_table(out).to_pandas()
    probs = rows[[f"p_{label}" for label in word_model.labels]]
    rows["confidence"], rows["predicted"] = probs.max(axis=1), probs.idxmax(axis=1).str[2:]
    assert {"word_id", "word", "page_number", "document_id", "file_name"} <= set(rows.columns)
    assert rows["key"].tolist() == rows["word_id"].tolist()
    pages = rows.groupby("location", sort=False)
    assert len(pages) == 2
    for location, words in pages:
        name = location.rsplit("/", 1)[-1]
        header = next(i for i, line in enumerate(lines) if line.startswith(f"{name} page 1:"))
        assert f"{len(words)} words" in lines[header]
        low = (words["confidence"] < 0.5).sum()
        assert lines[header].endswith(f"{low} to review")
        shown = words.sort_values("confidence", kind="stable").head(3)  # --top-k 3
        for line, (_, row) in zip(lines[header + 1 : header + 4], shown.iterrows(), strict=True):
            assert line.split()[:3] == [row["word"], row["predicted"], f"{row['confidence']:.2f}"]
            assert line.endswith("<- review") == (row["confidence"] < 0.5)
    assert f"{len(rows)} words on 2 pages in 2 documents" in "\n".join(lines)
