"""The offline kit itself: each tiny model classifies pages through the real pipeline."""

import subprocess
import sys

import pytest

from probhook.testing import MODEL_KINDS, make_pages, make_pipe, run_pipe


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_tiny_model_classifies_pages_in_deepdoctection(tiny, kind):
    model = tiny(kind)
    pixels = kind == "layoutlmv3"
    pages = run_pipe(make_pipe(model), make_pages(3, n_documents=2, seed=2, with_pixels=pixels))
    assert [p.page_number for p in pages] == [1, 1, 2]
    assert [p.document_id for p in pages] == ["doc-0", "doc-1", "doc-0"]
    for page in pages:
        assert str(page.document_type.value) in model.labels


def test_import_probhook_is_cheap():
    code = (
        "import sys, probhook\n"
        "heavy = {'torch', 'deepdoctection', 'transformers', 'pandas', 'pyarrow', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
