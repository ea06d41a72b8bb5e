"""Offline builders for token classification (per-word heads), part of ``probhook.testing``.

Tiny seeded ``*ForTokenClassification`` models with BIO categories, deepdoctection's
``LMTokenClassifierService`` around them, and pages long enough to need several windows of the
tiny models' 64 tokens, some of whose words split into several word pieces:

    from probhook.testing import build_token_model, make_token_pages, make_token_pipe, run_pipe

    tiny = build_token_model("layoutlm", tmp_path)
    pages = run_pipe(make_token_pipe(tiny, sliding_window_stride=16), make_token_pages(6))
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

from probhook.integrations.deepdoctection.analyzer import token_wrapper_name
from probhook.integrations.deepdoctection.kit import (
    WORDS,
    ModelKind,
    TinyModel,
    build_model,
    make_page,
    make_service,
)
from probhook.integrations.deepdoctection.vocab import TokenizerKind

__all__ = [
    "BIO_LABELS",
    "OOV_WORDS",
    "build_token_model",
    "make_token_pages",
    "make_token_pipe",
    "make_token_service",
    "token_wrapper_for",
]

BIO_LABELS: tuple[str, ...] = (
    "B-answer", "B-header", "B-question", "I-answer", "I-header", "I-question", "O",
)  # fmt: skip
"""deepdoctection's registered BIO tags (``TokenClassWithTagLabel`` values and ``O``)."""

OOV_WORDS: tuple[str, ...] = ("qzv", "xylo", "kpw", "mjrt", "bvx", "zzq", "2024", "wfhk")
"""Words outside the vocabulary: they split into pieces (``qzv`` -> ``q ##z ##v``) or become one
``[UNK]`` (``2024``: ``##0`` is not in the vocabulary)."""


def build_token_model(
    kind: ModelKind,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] = BIO_LABELS,
    seed: int = 0,
    max_length: int = 64,
    tokenizer: TokenizerKind = "wordpiece",
) -> TinyModel:
    """A seeded random ``*ForTokenClassification`` with ``labels`` (BIO tags), saved to ``path``;
    64 tokens per window, so that pages of [`make_token_pages`][make_token_pages] need several;
    ``tokenizer="bpe"``: RoBERTa-style special tokens."""
    return build_model(kind, path, labels=labels, seed=seed, max_length=max_length,
                       task="token", head_scale=20.0, tokenizer=tokenizer)  # fmt: skip


def token_wrapper_for(tiny: TinyModel, device: str = "cpu") -> Any:
    """deepdoctection's token wrapper for ``tiny``, with categories ``{1: labels[0], ...}``."""
    import deepdoctection as dd

    wrapper = getattr(dd, token_wrapper_name(tiny.kind))
    categories = {i + 1: label for i, label in enumerate(tiny.labels)}
    return wrapper(tiny.config_path, tiny.path, categories=categories, device=device)


def make_token_service(
    tiny: TinyModel, *, sliding_window_stride: int = 0, wrapper: Any = None
) -> Any:
    """An ``LMTokenClassifierService`` around the real wrapper for ``tiny``."""
    import deepdoctection as dd

    return dd.LMTokenClassifierService(
        tiny.load_tokenizer(),
        wrapper or token_wrapper_for(tiny),
        sliding_window_stride=sliding_window_stride,
    )


def make_token_pipe(
    tiny: TinyModel, *, sliding_window_stride: int = 0, sequence: TinyModel | None = None
) -> Any:
    """A ``DoctectionPipe`` with a token service, then a sequence service for ``sequence``.

    The token service comes first: deepdoctection 1.4's text-only token mapper
    (``HFLmTokenClassifier``) fails on a page that already has a document type.
    """
    import deepdoctection as dd

    components = [make_token_service(tiny, sliding_window_stride=sliding_window_stride)]
    if sequence is not None:
        components.append(make_service(sequence))
    return dd.DoctectionPipe(pipeline_component_list=components)


def make_token_pages(
    n_pages: int,
    *,
    n_documents: int = 2,
    words_per_page: Sequence[int] | int = (70, 20, 55, 90),
    oov_rate: float = 0.25,
    with_pixels: bool = False,
    empty_pages: Sequence[int] = (),
    shuffle: bool = True,
    seed: int = 0,
) -> list[Any]:
    """Pages of ``n_documents`` multi-page documents, shuffled unless ``shuffle=False``.

    ``words_per_page`` cycles over the pages; ``oov_rate`` of the words split into pieces or
    become [UNK]. With 64-token models, a page of more than ~60 pieces needs several windows
    (``sliding_window_stride``) and is truncated without them.
    """
    rng = random.Random(seed)
    counts = [words_per_page] if isinstance(words_per_page, int) else list(words_per_page)
    pages = []
    for i in range(n_pages):
        doc, page_number = i % n_documents, i // n_documents + 1
        n = 0 if i in empty_pages else counts[i % len(counts)]
        words = [
            rng.choice(OOV_WORDS) if rng.random() < oov_rate else rng.choice(WORDS)
            for _ in range(n)
        ]
        pages.append(
            make_page(words, file_name=f"doc{doc}_p{page_number}.pdf", document_id=f"doc-{doc}",
                      page_number=page_number, with_pixels=with_pixels, seed=seed + i)
        )  # fmt: skip
    if shuffle:
        rng.shuffle(pages)
    return pages
