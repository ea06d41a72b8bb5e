"""The test kit's words and tokenizers: a WordPiece vocabulary in BERT's layout (``[CLS]`` = 101,
``[SEP]`` = 102, which dd-core's sliding-window code path requires) and a byte-level BPE
tokenizer trained on the same words (RoBERTa's ``<s>``, ``</s>``, ``<pad>``), both offline and
deterministic.

Examples:
    >>> from probhook.integrations.deepdoctection.vocab import bpe_tokenizer
    >>> tokenizer = bpe_tokenizer(max_length=16)
    >>> tokenizer(["total", "due"], is_split_into_words=True).tokens()[0], tokenizer.pad_token
    ('<s>', '<pad>')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

TokenizerKind = Literal["wordpiece", "bpe"]
BPE_SPECIAL = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
"""A byte-level BPE tokenizer's special tokens (RoBERTa, XLM-R, LiLT, LayoutLMv3), in id order."""

WORDS: tuple[str, ...] = (
    "dear", "sir", "madam", "sincerely", "regards", "yours", "letter", "invoice", "total", "amount",
    "due", "date", "number", "customer", "payment", "tax", "price", "quantity", "item", "form",
    "name", "address", "signature", "please", "fill", "field", "check", "box", "memo", "to",
    "from", "subject", "re", "meeting", "team", "office", "the", "a", "of", "and", "for", "in",
    "on", "with", "is", "we", "you", "your", "our", "this", "that", "order", "account", "bank",
    "report", "page", "summary", "note", "thanks", "company", "street", "city", "phone", "email",
)  # fmt: skip

_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}


def write_vocab(path: str | os.PathLike[str]) -> Path:
    """Write the BERT-layout vocabulary (special tokens at their usual ids, then
    [`WORDS`][WORDS])."""
    tokens = [_SPECIAL.get(i, f"[unused{i}]") for i in range(104)]
    tokens += list(WORDS) + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    out = Path(path)
    out.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out


def bpe_tokenizer(max_length: int) -> Any:
    """A byte-level BPE tokenizer trained on [`WORDS`][WORDS] (deterministic, offline)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    corpus = [" ".join(WORDS)] * 3 + list(WORDS)
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1,
                            special_tokens=list(BPE_SPECIAL), show_progress=False)  # fmt: skip
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    names = {f"{k}_token": v for k, v in zip(("bos", "pad", "eos", "unk", "mask"), BPE_SPECIAL,
                                               strict=True)}  # fmt: skip
    return RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        add_prefix_space=True,
        model_max_length=max_length,
        cls_token=names["bos_token"],
        sep_token=names["eos_token"],
        **names,
    )
