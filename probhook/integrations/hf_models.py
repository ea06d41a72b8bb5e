"""Hugging Face ``*ForTokenClassification`` models: one row per word, or per attended token.

A plain token classifier is a word head (``probhook.heads``); its rows come from this mapper.
Inside ``cap.tokens(encoding)`` (a fast tokenizer's ``BatchEncoding``) each sequence's words are
known (``word_ids()``): one row per word, keyed ``(sequence, word index)``, chosen by the
capture's ``word_rule``; overlapping windows (``return_overflowing_tokens=True``) share the words
of their sample. Without it, one row per attended token, keyed ``(sequence, token)``.

Examples:
    >>> import torch
    >>> from transformers import BertConfig, BertForTokenClassification
    >>> from probhook import capture_probs
    >>> config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=8, num_labels=3)
    >>> model = BertForTokenClassification(config).eval()
    >>> with capture_probs(model) as cap:
    ...     _ = model(input_ids=torch.tensor([[1, 2, 3]]))
    >>> cap.keys
    [(0, 0), (0, 1), (0, 2)]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.heads import Forward, MappedRows
from probhook.words import word_rows

Array = npt.NDArray[Any]


def hf_word_ids(encoding: Any) -> list[list[tuple[int, int] | None]]:
    """Per sequence of a fast tokenizer's ``BatchEncoding``, each position's word as
    ``(sequence, word index)``; with ``return_overflowing_tokens=True`` as ``(sample, word
    index)``, so that the windows of one sample share their words."""
    word_ids = getattr(encoding, "word_ids", None)
    if word_ids is None or not getattr(encoding, "encodings", None):
        raise TypeError(
            f"cap.tokens() needs a fast tokenizer's BatchEncoding (with word_ids()), got "
            f"{type(encoding).__name__}; tokenize with a *TokenizerFast"
        )
    mapping = encoding.get("overflow_to_sample_mapping")
    out: list[list[tuple[int, int] | None]] = []
    for i in range(len(encoding.encodings)):
        sample = i if mapping is None else int(mapping[i])
        out.append([None if w is None else (sample, int(w)) for w in word_ids(i)])
    return out


def hf_positions(encoding: Any) -> Array | None:
    """For overlapping windows (``overflow_to_sample_mapping``), each position's character
    offset, which tells copies of one sub-token of a word apart from its other pieces."""
    if encoding.get("overflow_to_sample_mapping") is None:
        return None
    return np.array([[start for start, _ in e.offsets] for e in encoding.encodings])


def token_rows(probs: Array, attention_mask: Any = None) -> tuple[Array, Array]:
    """One row per attended token (every token without a mask): rows and their
    ``(sequence, position)`` index."""
    probs = np.asarray(probs)
    if attention_mask is None:
        mask = np.ones(probs.shape[:2], bool)
    else:
        m = attention_mask.detach().cpu() if hasattr(attention_mask, "detach") else attention_mask
        mask = np.asarray(m).astype(bool)
        if mask.shape != probs.shape[:2]:
            raise ValueError(f"attention mask {mask.shape} does not match {probs.shape[:2]}")
    index = np.argwhere(mask)
    return np.ascontiguousarray(probs[mask], np.float32), index


TOKEN_WORDS = "probhook.token_words"
"""The metadata entry ``cap.tokens(encoding)`` sets: the encoding's word ids and positions."""
COLUMNS: dict[str, Any] = {"sequence": "int", "word_index": "int", "token_index": "int"}
GROUP = "sequence"
"""The column that groups a forward's words: ``cap.words(i)`` reads sequence ``i``."""


def token_words(encoding: Any) -> dict[str, Any]:
    """The metadata entry of ``cap.tokens(encoding)``: the encoding's word ids and positions
    (a slow tokenizer's encoding fails here)."""
    return {TOKEN_WORDS: (hf_word_ids(encoding), hf_positions(encoding))}


def _gather(logits: Array | None, token: Array) -> Array | None:
    if logits is None:
        return None
    flat = logits.reshape(-1, logits.shape[-1])
    return np.ascontiguousarray(flat[token], np.float32)


def rows_of(forward: Forward) -> Callable[[], MappedRows]:
    """A Hugging Face ``*ForTokenClassification`` forward as rows: one per word of each sequence
    inside ``cap.tokens(encoding)``, else one per attended token keyed ``(sequence, token)``."""
    n_seq, length, _ = forward.shape
    words = (forward.meta or {}).get(TOKEN_WORDS)
    if words is None:
        return functools.partial(_hf_token_rows, forward)
    word_ids, positions = words
    if len(word_ids) != n_seq or any(len(w) != length for w in word_ids):
        raise ValueError(
            f"cap.tokens(encoding) holds {len(word_ids)} sequences of "
            f"{sorted({len(w) for w in word_ids})} tokens, but the forward had {n_seq} of "
            f"{length}: pass the encoding the model is called with"
        )
    return functools.partial(_hf_word_rows, forward, word_ids, positions)


def _hf_token_rows(forward: Forward) -> MappedRows:
    length = forward.shape[1]
    rows, index = token_rows(forward.probs(), forward.kwargs.get("attention_mask"))
    flat = index[:, 0] * length + index[:, 1]
    return MappedRows(
        rows,
        [(int(s), int(t)) for s, t in index],
        {"sequence": index[:, 0], "word_index": None, "token_index": index[:, 1]},
        _gather(forward.logits(), flat),
    )


def _hf_word_rows(forward: Forward, word_ids: Any, positions: Array | None) -> MappedRows:
    length = forward.shape[1]
    out = word_rows(forward.probs(), word_ids, forward.rule, positions=positions)
    keys = out.word_ids
    token_index = np.where(out.token >= 0, out.token % length, -1)
    return MappedRows(
        out.probs,
        keys,
        {
            "sequence": [k[0] for k in keys],  # type: ignore[index]
            "word_index": [k[1] for k in keys],  # type: ignore[index]
            "token_index": [None if t < 0 else int(t) for t in token_index],
        },
        None if out.rule == "mean" else _gather(forward.logits(), out.token),
    )
