"""deepdoctection token classifiers: one row per word, keyed by the word's ``annotation_id``.

``LMTokenClassifierService.serve(dp)`` turns a page into encodings and calls
``language_model.predict(**encodings)``, which runs the model once over all sliding windows. The
encodings carry each token position's word (``ann_ids``; at special and padding positions the
tokenizer's own CLS, SEP and PAD token: ``[CLS]`` for BERT, ``<s>`` for RoBERTa-style
tokenizers) and its token string: everything the word rules of [`probhook.words`][probhook.words]
need. For the duration of a capture, ``serve`` (by the adapter, on the service instance) and
``predict`` (on the wrapper instance) add what they know to the capture's metadata: the page's
word texts and the tokenizer's special tokens ([`serving_meta`][serving_meta]), then the
forward's encodings ([`wrap_predict`][wrap_predict]); the head's forward hook hands that
metadata, with the logits, to [`rows_of`][rows_of]. Classes are never touched; a forward outside
``predict`` (user code, training) gives no rows.

Rows: the key and ``word_id`` are the word's ``annotation_id``; ``word`` its text; ``dd_tagged``
is 1 when deepdoctection stores a ``token_tag`` for the word (it drops a word whose chosen token
is a ``##`` continuation or a special token; such a word still has a row, with 0 here).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from probhook.heads import Forward, MappedRows
from probhook.integrations import meta_during
from probhook.words import WordRows, word_rows

if TYPE_CHECKING:
    from probhook.block import ColumnKind
    from probhook.integrations import CaptureHost

TOKEN_COLUMNS: Mapping[str, ColumnKind] = {"word_id": "str", "word": "str", "dd_tagged": "int"}
TOKEN_WRAPPERS = (
    "HFLayoutLmTokenClassifier",
    "HFLayoutLmv2TokenClassifier",
    "HFLayoutLmv3TokenClassifier",
    "HFLiltTokenClassifier",
    "HFLmTokenClassifier",
)
"""Wrappers whose ``predict`` receives the encodings with ``ann_ids`` (deepdoctection 1.x)."""


SERVING = "probhook.dd.serving"
"""The metadata entry of the page a token service serves now (a [`_Serving`][_Serving])."""
CALL = "probhook.dd.call"
"""The metadata entry of the encodings of the forward about to run (a [`_Call`][_Call])."""


@dataclass(frozen=True)
class _Serving:
    """The page a service serves now (its words' texts), and what of the service its rows
    need."""

    texts: dict[Any, str]  # annotation_id -> text, of every annotation that has characters
    stride: int  # the service's sliding_window_stride
    special_tokens: frozenset[str]  # its tokenizer's CLS, SEP and PAD tokens
    pad_token: str | None


@dataclass(frozen=True)
class _Call:
    """The encodings of the one forward about to run."""

    ann_ids: list[list[str]]
    tokens: list[list[str]]
    image_ids: list[str]


def is_token_wrapper(dd: Any, obj: Any) -> bool:
    """Whether ``obj`` is a deepdoctection LM token classifier (mappable or not)."""
    return isinstance(obj, dd.LMTokenClassifier)


def check_mappable(wrapper: Any, where: str) -> None:
    """Refuse, before any hook, a token wrapper whose encodings probhook does not know."""
    mro = [cls.__name__ for cls in type(wrapper).__mro__]
    if not any(name in mro for name in TOKEN_WRAPPERS) or not hasattr(wrapper, "model"):
        raise ValueError(
            f"{where}: the token classifier {type(wrapper).__name__} is not one whose predict() "
            f"receives deepdoctection's word ids (ann_ids) ({', '.join(TOKEN_WRAPPERS)}), so its "
            "(windows, tokens, classes) output cannot be mapped to words"
        )


def serving_meta(service: Any) -> Callable[[Any], dict[str, Any]]:
    """For ``service``: ``meta(page)``, the metadata entry that makes ``page`` what its
    wrapper's ``predict`` attributes rows to. The service's stride and special tokens are read
    once here, not per page."""
    tokenizer = getattr(service, "tokenizer", None)
    names = {n: getattr(tokenizer, f"{n}_token", None) for n in ("cls", "sep", "pad")}
    special = frozenset(str(t) for t in names.values() if t is not None)
    pad = None if names["pad"] is None else str(names["pad"])
    stride = getattr(service, "sliding_window_stride", 0) or 0

    def meta(page: Any) -> dict[str, Any]:
        return {SERVING: _Serving(page_texts(page), stride, special, pad)}

    return meta


def wrap_predict(wrapper: Any, host: CaptureHost, stack: contextlib.ExitStack) -> None:
    """Wrap ``wrapper.predict`` on the instance (undone by ``stack``): its encodings join the
    capture's metadata for the forward it runs."""

    def meta_of(encodings: Mapping[str, Any]) -> dict[str, Any]:
        ann_ids, tokens = encodings.get("ann_ids") or [], encodings.get("tokens") or []
        return {CALL: _Call(ann_ids, tokens, list(encodings.get("image_ids") or []))}

    meta_during(wrapper, "predict", host, stack, meta_of, add=True)


def page_texts(page: Any) -> dict[Any, str]:
    """The text (``WordKey.CHARACTERS``) of each annotation of ``page`` that has one, by
    ``annotation_id``.

    Read when a service starts serving the page, right before deepdoctection's own feature
    mapper reads the same annotations: the memory traffic is shared (measured on 200-word pages:
    the read costs ~0.12 ms and the serve takes ~0.06 ms longer), where the same loop after the
    forward, on annotations long out of the cache, cost 0.15 to 0.5 ms.
    """
    from deepdoctection import WordKey

    chars_key = WordKey.CHARACTERS
    annotations = page.annotations
    texts: dict[Any, str] = {}
    for ann_id, ann in zip(_annotation_ids(annotations), annotations, strict=True):
        chars = ann.sub_categories.get(chars_key)
        if chars is not None:
            texts[ann_id] = chars.value
    return texts


def _annotation_ids(annotations: list[Any]) -> list[Any]:
    """Each annotation's ``annotation_id``.

    deepdoctection 1.x's pydantic ``annotation_id`` property costs ~2.5 µs a call, which made
    this lookup half the cost of a token hook: its value is read from the private-attribute
    dict directly where there is one (0.03 µs), through the property otherwise (0.x dataclasses).
    """
    try:
        return [a.__pydantic_private__["_annotation_id"] for a in annotations]
    except (AttributeError, KeyError, TypeError):
        return [a.annotation_id for a in annotations]


def rows_of(forward: Forward) -> Callable[[], MappedRows] | None:
    """The word rows of one forward of a deepdoctection token model (None: not from predict);
    the encodings are checked now, the rows made when the writer asks."""
    meta = forward.meta or {}
    call = meta.get(CALL)
    if call is None:
        return None
    n_windows, length, _ = forward.shape
    if len(call.ann_ids) != n_windows or any(len(a) != length for a in call.ann_ids):
        raise RuntimeError(
            f"token logits {forward.shape} do not match the {len(call.ann_ids)} windows "
            "of word ids deepdoctection passed to predict()"
        )
    return functools.partial(_word_rows, forward, call, meta.get(SERVING))


def _word_rows(forward: Forward, call: _Call, serving: _Serving | None) -> MappedRows:
    n_windows, length, _ = forward.shape
    # a bare wrapper's tokenizer is unknown: dd puts a special token itself as its word id
    special = serving.special_tokens if serving else _specials(call)
    used = _unpadded_length(call.ann_ids, length, serving.pad_token if serving else None)
    ann_ids, tokens = call.ann_ids, call.tokens
    if used < length:
        ann_ids, tokens = [a[:used] for a in ann_ids], [t[:used] for t in tokens]
    positions = None  # only the "first" and "mean" rules tell copies of a token apart
    if forward.rule != "dd" and serving is not None and serving.stride:
        positions = dd_window_positions(n_windows, used, serving.stride)
    rows = word_rows(forward.probs(used), ann_ids, forward.rule, positions=positions,
                     special_word_ids=special)  # fmt: skip
    tagged = dd_tagged(rows, tokens, special)
    columns: dict[str, Any] = {
        "word_id": rows.word_ids,
        "word": list(map(serving.texts.get, rows.word_ids)) if serving else None,
        "dd_tagged": tagged.astype("int64"),
    }
    if SERVING not in (forward.meta or {}) and call.image_ids:  # a bare wrapper: the page id
        columns["image_id"] = call.image_ids[0]
    raw = forward.logits(used) if rows.rule != "mean" else None
    logits = None if raw is None else raw.reshape(-1, raw.shape[-1])[rows.token]
    return MappedRows(rows.probs, list(rows.word_ids), columns, logits)


def _specials(call: _Call) -> frozenset[str]:
    """The special tokens of a forward: the positions whose word id is their token."""
    ids, toks = chain.from_iterable(call.ann_ids), chain.from_iterable(call.tokens)
    return frozenset(a for a, t in zip(ids, toks, strict=True) if a == t)


def _unpadded_length(ann_ids: list[list[str]], length: int, pad: str | None) -> int:
    """The positions before the trailing ``pad`` run of the longest window: a page shorter
    than the model's window is mostly padding, which is then never activated nor mapped
    (softmax works row by row, so the rows that are kept come out bit for bit the same)."""
    if pad is None:
        return length
    used = 0
    for window in ann_ids:
        if not window or window[-1] != pad:
            return length
        first = window.index(pad)
        if window.count(pad) != length - first:  # not one trailing run: keep everything
            return length
        used = max(used, first)
    return used


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


def dd_window_positions(n_windows: int, length: int, stride: int) -> npt.NDArray[Any] | None:
    """The un-windowed token index of every position of dd-core's sliding windows (window k
    starts at token ``max(k * stride, 1)`` after its own CLS token); None for a single
    window."""
    if n_windows == 1 or not stride:
        return None
    starts = np.maximum(np.arange(n_windows) * stride, 1)
    out: npt.NDArray[Any] = starts[:, None] + np.arange(length)[None, :] - 1
    return out
