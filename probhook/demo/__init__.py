"""The embedded demo: a small LayoutLM document classifier and sample PDFs, shipped as data.

Both are made by scripts in the repository (``scripts/train_demo_model.py`` and
``scripts/make_demo_pdfs.py``) from [`probhook.demo.synth`][probhook.demo.synth], deterministically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from probhook.demo.synth import Document

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
SAMPLES_DIR = HERE / "samples"
MAX_LENGTH = 256
CLS_BOX, SEP_BOX = [0, 0, 1000, 1000], [1000, 1000, 1000, 1000]  # as dd-core pads LayoutLM input


def load_tokenizer(path: Path = MODEL_DIR) -> Any:
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=str(path / "vocab.txt"), model_max_length=MAX_LENGTH)


def encode(docs: list[Document], tokenizer: Any) -> dict[str, torch.Tensor]:
    """LayoutLM inputs for ``docs`` built the way deepdoctection builds them at inference:
    words split into word pieces that share their word's box, CLS/SEP/PAD boxes as dd-core's."""
    import torch

    from probhook.demo.synth import words_and_boxes

    pairs = [words_and_boxes(d) for d in docs]
    enc = tokenizer([w for w, _ in pairs], is_split_into_words=True, padding="max_length",
                    truncation=True, return_token_type_ids=True, return_tensors="pt")  # fmt: skip
    bbox = []
    for i, (_, boxes) in enumerate(pairs):
        tokens, ids = enc.tokens(i), enc.word_ids(i)
        bbox.append([
            boxes[w] if w is not None else CLS_BOX if t == tokenizer.cls_token else SEP_BOX
            for t, w in zip(tokens, ids, strict=True)
        ])  # fmt: skip
    return {**dict(enc), "bbox": torch.tensor(bbox, dtype=torch.long)}
