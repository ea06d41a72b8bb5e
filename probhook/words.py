"""Token rows to word rows: the sub-token rules, the Hugging Face word ids, entity folding.

A token-classification head outputs ``(sequences, tokens, classes)``; a person reviews words.
The functions here are pure numpy (no framework): they take the probabilities of one forward,
already on the host, and the word of each token position (``None`` for special and padding
tokens), and return one row per word, in the order in which words first appear.

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

import functools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from probhook.distribution import Distribution
from probhook.options import WORD_RULES

Array = npt.NDArray[Any]
DD_SPECIAL_WORD_IDS: frozenset[str] = frozenset({"[CLS]", "[SEP]", "[PAD]"})
"""The placeholders deepdoctection puts in ``ann_ids`` at special and padding positions."""
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
        special_word_ids: ids treated as None (deepdoctection's ``"[CLS]"`` placeholders).
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


def dd_tagged(
    rows: WordRows, tokens: Sequence[Sequence[str]], special_tokens: Iterable[str] = ()
) -> npt.NDArray[np.bool_]:
    """Whether deepdoctection stores a tag for each word: it drops a word whose chosen token
    starts with ``##`` or is the tokenizer's CLS, SEP or PAD token (deepdoctection compares
    ids; a fast tokenizer's token strings stand for their ids one to one)."""
    flat_tokens = list(chain.from_iterable(tokens))
    special = frozenset(special_tokens)
    chosen = map(flat_tokens.__getitem__, rows.dd_token.tolist())
    return np.array([not (t.startswith("##") or t in special) for t in chosen], bool)


def dd_window_positions(n_windows: int, length: int, stride: int) -> Array | None:
    """The un-windowed token index of every position of dd-core's sliding windows (window k
    starts at token ``max(k * stride, 1)`` after its own [CLS]); None for a single window."""
    if n_windows == 1 or not stride:
        return None
    starts = np.maximum(np.arange(n_windows) * stride, 1)
    out: Array = starts[:, None] + np.arange(length)[None, :] - 1
    return out


# -- Hugging Face ----------------------------------------------------------------------------


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


# -- the recording side of token heads ---------------------------------------------------------


@dataclass(frozen=True)
class TokenForward:
    """What a token head's row mapper sees of one forward.

    The output's logits stay on their device (a copy: the caller may change its own later):
    the mapper asks for ``probs(n)`` (and ``logits(n)``) once, for the first ``n`` positions of
    every sequence, so that padding past the last used position is never activated nor copied
    to the host.
    """

    output: Any  # (sequences, tokens, classes) logits, a tensor or an array
    activate: Callable[[Any], npt.NDArray[np.float32]]  # logits -> host float32 probabilities
    keep: Callable[[Any], npt.NDArray[np.float32]] | None  # logits -> host float32, if kept
    kwargs: Mapping[str, Any]  # the forward's keyword arguments
    meta: Mapping[str, Any] | None  # the capture's metadata current in this context
    rule: str  # the capture's word_rule

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(sequences, tokens, classes)``."""
        n_seq, length, n_cls = self.output.shape
        return int(n_seq), int(length), int(n_cls)

    def probs(self, length: int | None = None) -> npt.NDArray[np.float32]:
        """The probabilities of the first ``length`` positions (all: None), on the host."""
        return self.activate(self._first(length))

    def logits(self, length: int | None = None) -> npt.NDArray[np.float32] | None:
        """The logits of the first ``length`` positions on the host, if the capture keeps them."""
        return None if self.keep is None else self.keep(self._first(length))

    def _first(self, length: int | None) -> Any:
        if length is None or length >= self.output.shape[1]:
            return self.output
        return self.output[:, :length]


@dataclass(frozen=True)
class MappedRows:
    """The rows a token head's forward becomes: probabilities, keys and column values per row."""

    probs: npt.NDArray[np.float32]
    keys: list[Any]
    columns: dict[str, Any]
    logits: npt.NDArray[np.float32] | None = None


RowMapper = Callable[[TokenForward], "Callable[[], MappedRows] | None"]
"""A token head's mapper: called in the forward hook, it checks the forward (a mismatch raises
there) and returns the function that makes its rows (None: not attributable), which runs
later, staged (see ``probhook.recording``): it holds, not looks up, the forward's context."""
TOKEN_WORDS = "probhook.token_words"
"""The metadata entry ``cap.tokens(encoding)`` sets: the encoding's word ids and positions."""
HF_TOKEN_COLUMNS: dict[str, Any] = {"sequence": "int", "word_index": "int", "token_index": "int"}


def _gather(logits: Array | None, token: Array) -> Array | None:
    if logits is None:
        return None
    flat = logits.reshape(-1, logits.shape[-1])
    return np.ascontiguousarray(flat[token], np.float32)


def hf_rows(forward: TokenForward) -> Callable[[], MappedRows]:
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


def _hf_token_rows(forward: TokenForward) -> MappedRows:
    length = forward.shape[1]
    rows, index = token_rows(forward.probs(), forward.kwargs.get("attention_mask"))
    flat = index[:, 0] * length + index[:, 1]
    return MappedRows(
        rows,
        [(int(s), int(t)) for s, t in index],
        {"sequence": index[:, 0], "word_index": None, "token_index": index[:, 1]},
        _gather(forward.logits(), flat),
    )


def _hf_word_rows(forward: TokenForward, word_ids: Any, positions: Array | None) -> MappedRows:
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
