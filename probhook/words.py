"""Token rows to word rows: the sub-token rules, one row per attended token, entity folding.

A token-classification head outputs ``(sequences, tokens, classes)``; a person reviews words.
The functions here are pure numpy (no framework): they take the probabilities of one forward,
already on the host, and the word of each token position (``None`` for special and padding
tokens), and return one row per word, in the order in which words first appear. What a
framework tells about its words (which positions are special, which windows overlap) is its
integration's: ``probhook.integrations.deepdoctection.tokens`` and
``probhook.integrations.hf_models``.

Which sub-token speaks for a word (``word_rule=`` of a capture):

``"dd"``
    deepdoctection's rule: of all the word's tokens (in every sliding window) the one whose top
    probability is highest; ties go to the earliest occurrence, window by window (deepdoctection
    sorts with Python's stable sort). Its argmax and top probability are what deepdoctection
    stores as the word's ``token_tag`` and score.
``"first"``
    the word's first sub-token (the usual Hugging Face convention); with overlapping windows its
    copy in the earliest window.
``"mean"``
    the mean of the word's sub-token distributions; copies of one token in overlapping windows
    are averaged first (given ``positions``), so a word cut by a window edge is not weighted
    towards the pieces seen twice.

Examples:
    >>> import numpy as np
    >>> from probhook.words import word_rows
    >>> probs = np.array([[[.5, .5], [.9, .1], [.2, .8], [.6, .4]]], np.float32)
    >>> rows = word_rows(probs, [[None, "w1", "w1", "w2"]], "dd")
    >>> rows.word_ids, rows.probs.round(2).tolist()
    (['w1', 'w2'], [[0.9, 0.1], [0.6, 0.4]])
    >>> word_rows(probs, [[None, "w1", "w1", "w2"]], "mean").probs[0].round(2).tolist()
    [0.55, 0.45]
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.distribution import Distribution
from probhook.options import WORD_RULES

Array = npt.NDArray[Any]
ENTITY_PREFIXES: tuple[str, ...] = ("B-", "I-", "E-", "S-")
_ONE_BITS = np.uint32(0x3F800000)  # 1.0 as float32 bits; every probability's are at most this


@dataclass(frozen=True)
class WordRows:
    """One row per word for one rule; every array is aligned with ``word_ids``.

    ``token`` is the flat index (``sequence * tokens + position``) of the token that speaks for
    the word (-1 for ``"mean"``); ``dd_token`` the one deepdoctection's rule chooses.
    """

    rule: str
    word_ids: list[Hashable]
    probs: npt.NDArray[np.float32]
    token: npt.NDArray[np.int64]
    dd_token: npt.NDArray[np.int64]
    n_tokens: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.word_ids)


def _codes(word_ids: Sequence[Sequence[Any]], skip: Iterable[Any]) -> tuple[Array, list[Any]]:
    """A word index per flat token position (-1: none) and the words in first-appearance order."""
    # dict.fromkeys and map(dict.__getitem__) run in C: a Python loop would cost 5x as much
    flat = list(chain.from_iterable(word_ids))
    index = dict.fromkeys(flat)
    none = dict.fromkeys((None, *skip), -1)
    for w in none:
        index.pop(w, None)
    ids = list(index)
    lookup = dict(zip(ids, range(len(ids)), strict=True))
    lookup.update(none)
    return np.fromiter(map(lookup.__getitem__, flat), np.int64, len(flat)), ids


def _row_max(flat: Array) -> Array:
    """Each row's maximum: for a handful of classes one ``np.maximum`` per column, because
    numpy's reduction along a short contiguous axis costs ~35 ns a row (40 µs for a page)."""
    if flat.shape[1] > 32 or not flat.shape[1]:
        return flat.max(axis=1) if len(flat) else np.zeros(0, flat.dtype)
    out: Array = flat[:, 0].copy()
    for j in range(1, flat.shape[1]):
        np.maximum(out, flat[:, j], out=out)
    return out


def _by_word_then_top(codes: Array, top: Array) -> Array:
    """Positions sorted by word code, then by top probability, highest first; equal scores
    keep their flat order (deepdoctection sorts with Python's stable sort).

    float32 values in [0, 1] rise with their bit patterns: one stable integer sort instead of
    a two-key ``lexsort`` (5x as costly). Anything else (logits, float64, NaN) is lexsorted.
    """
    if top.dtype == np.float32 and len(top):
        bits = top.view(np.uint32)
        if bits.max() <= _ONE_BITS:
            key = (codes << 30) + (_ONE_BITS - bits).astype(np.int64)
            return np.argsort(key, kind="stable")
    return np.lexsort((-top, codes))


def _group_starts(sorted_codes: Array) -> Array:
    if not len(sorted_codes):
        return sorted_codes
    return np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])


def word_rows(
    probs: Array,
    word_ids: Sequence[Sequence[Any]],
    rule: str = "dd",
    *,
    positions: Array | None = None,
    special_word_ids: Iterable[Any] = (),
) -> WordRows:
    """One row per word of one forward (see the module docstring for the rules).

    Args:
        probs: ``(sequences, tokens, classes)`` probabilities (numpy, float32 as computed).
        word_ids: per sequence, per token position, the word's id (any hashable) or None.
        rule: ``"dd"``, ``"first"`` or ``"mean"``.
        positions: per sequence and position, the token's index in the un-windowed text; lets
            ``"first"`` and ``"mean"`` recognise the copies of one token in overlapping windows.
        special_word_ids: ids treated as None (deepdoctection's placeholders at special and
            padding positions: the tokenizer's own CLS, SEP and PAD tokens).
    """
    if rule not in WORD_RULES:
        raise ValueError(f"word_rule must be one of {WORD_RULES}, got {rule!r}")
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (sequences, tokens, classes), got {probs.shape}")
    n_seq, length, n_cls = probs.shape
    if len(word_ids) != n_seq or any(len(w) != length for w in word_ids):
        raise ValueError(
            f"word ids for {len(word_ids)} sequences of lengths "
            f"{sorted({len(w) for w in word_ids})} do not match probabilities {probs.shape}"
        )
    codes, ids = _codes(word_ids, special_word_ids)
    flat = probs.reshape(-1, n_cls)
    # tokens sorted by word (tokens of no word first): word i's tokens start at ends[i]
    ends = np.cumsum(np.bincount(codes + 1, minlength=len(ids) + 1))
    order = _by_word_then_top(codes, _row_max(flat))
    dd_token = order[ends[:-1]]
    counts = np.diff(ends)
    if rule == "dd":
        token, rows = dd_token, flat[dd_token]
    else:
        valid = np.flatnonzero(codes >= 0)
        vcodes = codes[valid]
        pos = None if positions is None else np.asarray(positions).reshape(-1)[valid]
        if rule == "first":
            if pos is None:  # the first occurrence in flat order
                first = np.unique(vcodes, return_index=True)[1]
            else:  # the lowest original index, then the earliest window
                first = np.lexsort((np.arange(len(vcodes)), pos, vcodes))
                first = first[_group_starts(vcodes[first])]
            token = valid[first].astype(np.int64)
            rows = flat[token]
        else:
            token = np.full(len(ids), -1, np.int64)
            rows = _mean_rows(flat[valid].astype(np.float64), vcodes, pos, len(ids))
    return WordRows(
        rule, ids, np.ascontiguousarray(rows, np.float32), token, dd_token, counts
    )  # fmt: skip


def _mean_rows(p: Array, vcodes: Array, pos: Array | None, n_words: int) -> Array:
    """Per word, the mean of its tokens' rows (copies of one token averaged first)."""
    n_cls = p.shape[1]
    if pos is not None and len(pos):
        width = int(pos.max()) + 1
        pairs, inverse = np.unique(vcodes * width + pos, return_inverse=True)
        per_token = np.zeros((len(pairs), n_cls))
        np.add.at(per_token, inverse, p)
        p, vcodes = per_token / np.bincount(inverse)[:, None], pairs // width
    sums = np.zeros((n_words, n_cls))
    np.add.at(sums, vcodes, p)
    return sums / np.maximum(np.bincount(vcodes, minlength=n_words), 1)[:, None]


# -- entities ---------------------------------------------------------------------------------


def fold_entities(probs: Array, labels: Sequence[str]) -> tuple[Array, tuple[str, ...]]:
    """Sum tag columns per entity: ``B-x``, ``I-x``, ``E-x`` and ``S-x`` become ``x``; other
    labels (``O``) stay. Entities in order of first appearance among ``labels``.

    Examples:
        >>> import numpy as np
        >>> tags = ["B-answer", "I-answer", "B-q", "O"]
        >>> p, names = fold_entities(np.array([.5, .2, .1, .2]), tags)
        >>> names, p.round(2).tolist()
        (('answer', 'q', 'O'), [0.7, 0.1, 0.2])
    """
    entity = [
        label[2:] if label[:2] in ENTITY_PREFIXES and len(label) > 2 else label for label in labels
    ]
    names = tuple(dict.fromkeys(entity))
    column = np.array([names.index(e) for e in entity])
    arr = np.asarray(probs, dtype=np.float64)
    out = np.zeros((*arr.shape[:-1], len(names)))
    for j, target in enumerate(column):
        out[..., target] += arr[..., j]
    return out, names


def entity_distribution(dist: Distribution) -> Distribution:
    """A word's tag distribution folded into its entity distribution (see
    [`fold_entities`][fold_entities])."""
    probs, names = fold_entities(dist.probs, dist.labels)
    return Distribution(probs, names, dist.key, dist.head, dist.seq, dict(dist.meta))
