"""The command line's analyzer skips pixels its model never reads and changes no probability:
``probhook run`` against a bare deepdoctection analyzer built the same way, over the sample PDFs."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from probhook import capture_probs, demo
from probhook.cli import main
from probhook.integrations.deepdoctection.analyzer import build_analyzer, read_model_dir
from probhook.integrations.deepdoctection.pixels import pixels_needed, skip_unused_pixels

SAMPLES = sorted(demo.SAMPLES_DIR.glob("*.pdf"))


def _bare_run(model_dir, pdfs):
    """A bare analyzer (no pixel skipping) under a capture: each page's stored document type
    and score, whether it still had its pixels, and the capture."""
    from dd_core.utils.object_types import DocumentKey

    wrapper, labels = read_model_dir(model_dir)
    bare = build_analyzer(model_dir, wrapper, labels, ocr=False, skip_pixels=False)
    stored = {}
    with capture_probs(bare) as cap:
        for pdf in pdfs:
            flow = bare.analyze(path=str(pdf))
            flow.reset_state()
            for page in flow:
                category = page.summary.get_sub_category(DocumentKey.DOCUMENT_TYPE)
                stored[page.image_id] = (category.category_id, round(float(category.score), 8))
    return bare, stored, cap


@pytest.mark.parametrize("kind", ["demo", "lilt", "bert", "layoutlmv3"])
def test_probhook_run_matches_the_bare_analyzer_bit_for_bit(kind, tiny, tmp_path, capsys):
    model_dir = demo.MODEL_DIR if kind == "demo" else tiny(kind).path
    pdfs = SAMPLES if kind == "demo" else SAMPLES[:4]  # every sample once; a few for the rest
    bare, stored, bare_cap = _bare_run(model_dir, pdfs)
    assert pixels_needed(bare) == (kind == "layoutlmv3")
    out = tmp_path / "rows.parquet"
    assert main(["run", *map(str, pdfs), "--model", str(model_dir), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    table = pq.read_table(out)
    labels = bare_cap.labels
    probs = np.column_stack([table.column(f"p_{label}").to_numpy() for label in labels])
    keys = table.column("key").to_pylist()
    assert sorted(keys) == sorted(stored)  # the same pages, the same image ids
    for key, p in zip(keys, probs, strict=True):
        category_id, score = stored[key]
        assert int(np.argmax(p)) + 1 == category_id
        assert round(float(p.max()), 8) == score
        assert np.array_equal(p, bare_cap.get(key).probs)  # bit for bit, every class


def test_pages_come_without_pixels_only_where_nothing_reads_them(tiny):
    from probhook.integrations.deepdoctection.analyzer import quiet_libraries

    quiet_libraries()
    for model_dir, kept in ((demo.MODEL_DIR, False), (tiny("layoutlmv3").path, True)):
        wrapper, labels = read_model_dir(model_dir)
        analyzer = build_analyzer(model_dir, wrapper, labels, ocr=False)
        assert skip_unused_pixels(analyzer) is analyzer  # twice: harmless
        flow = analyzer.analyze(path=str(demo.SAMPLES_DIR / "letter_and_invoice.pdf"))
        flow.reset_state()
        pages = list(flow)
        assert len(pages) == 2
        assert all((page.image is not None) == kept for page in pages)
        assert all(page.width > 2000 and page.height > 2000 for page in pages)  # 300 dpi size
