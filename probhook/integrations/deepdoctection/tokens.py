"""deepdoctection token classifiers: one row per word, keyed by the word's ``annotation_id``.

``LMTokenClassifierService.serve(dp)`` turns a page into encodings and calls
``language_model.predict(**encodings)``, which runs the model once over all sliding windows. The
encodings carry each token position's word (``ann_ids``, with ``"[CLS]"``/``"[SEP]"``/``"[PAD]"``
placeholders) and its token string: everything the word rules of
[`probhook.words`][probhook.words] need. For the duration of a capture, ``predict`` is wrapped *on
the wrapper instance* (and ``serve`` on the service instance, by the adapter) to make them current
in a ``ContextVar``; the head's forward hook takes them, with the page's word texts, into the
forward's staged mapping. Classes are never touched; a forward outside ``predict`` (user code,
training) gives no rows.

Rows: the key and ``word_id`` are the word's ``annotation_id``; ``word`` its text; ``dd_tagged``
is 1 when deepdoctection stores a ``token_tag`` for the word (it drops a word whose chosen token
is a ``##`` continuation or a special token; such a word still has a row, with 0 here).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probhook.words import (
    DD_SPECIAL_WORD_IDS,
    MappedRows,
    TokenForward,
    dd_tagged,
    dd_window_positions,
    word_rows,
)

if TYPE_CHECKING:
    from probhook.block import ColumnKind

TOKEN_COLUMNS: Mapping[str, ColumnKind] = {"word_id": "str", "word": "str", "dd_tagged": "int"}
TOKEN_WRAPPERS = (
    "HFLayoutLmTokenClassifier",
    "HFLayoutLmv2TokenClassifier",
    "HFLayoutLmv3TokenClassifier",
    "HFLiltTokenClassifier",
    "HFLmTokenClassifier",
)
"""Wrappers whose ``predict`` receives the encodings with ``ann_ids`` (deepdoctection 1.x)."""


@dataclass(frozen=True)
class _Serving:
    """The page a service serves now (its words' texts), and what of the service its rows
    need."""

    texts: dict[Any, str]  # annotation_id -> text, of every annotation that has characters
    stride: int  # the service's sliding_window_stride
    special_tokens: frozenset[str]  # its tokenizer's CLS, SEP and PAD tokens


@dataclass(frozen=True)
class _Call:
    """The encodings of the one forward about to run, and where they come from."""

    ann_ids: list[list[str]]
    tokens: list[list[str]]
    image_ids: list[str]
    serving: _Serving | None


_SERVING: contextvars.ContextVar[_Serving | None] = contextvars.ContextVar(
    "probhook_dd_token_serving", default=None
)
_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "probhook_dd_token_call", default=None
)


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


def service_serving(service: Any) -> Callable[[Any], contextlib.AbstractContextManager[None]]:
    """For ``service``: a context manager factory, ``serving(page)``, that makes ``page`` what
    its wrapper's ``predict`` attributes rows to. The service's stride and special tokens are
    read once here, not per page."""
    tokenizer = getattr(service, "tokenizer", None)
    names = (getattr(tokenizer, f"{n}_token", None) for n in ("cls", "sep", "pad"))
    special = frozenset(str(t) for t in names if t is not None)
    stride = getattr(service, "sliding_window_stride", 0) or 0

    @contextlib.contextmanager
    def serving(page: Any) -> Iterator[None]:
        token = _SERVING.set(_Serving(page_texts(page), stride, special))
        try:
            yield
        finally:
            _SERVING.reset(token)

    return serving


def wrap_predict(wrapper: Any, stack: contextlib.ExitStack) -> None:
    """Wrap ``wrapper.predict`` on the instance (undone by ``stack``): its encodings become
    current for the forward it runs."""
    had_own = "predict" in vars(wrapper)
    original = wrapper.predict

    def predict(**encodings: Any) -> Any:
        call = _Call(
            encodings.get("ann_ids") or [],
            encodings.get("tokens") or [],
            list(encodings.get("image_ids") or []),
            _SERVING.get(),
        )
        token = _CALL.set(call)
        try:
            return original(**encodings)
        finally:
            _CALL.reset(token)

    def restore() -> None:
        if had_own:
            wrapper.predict = original
        else:
            del wrapper.predict

    wrapper.predict = predict
    stack.callback(restore)


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


def rows_of(forward: TokenForward) -> Callable[[], MappedRows] | None:
    """The word rows of one forward of a deepdoctection token model (None: not from predict);
    the encodings are checked now, the rows made when the recorder asks."""
    call = _CALL.get()
    if call is None:
        return None
    n_windows, length, _ = forward.shape
    if len(call.ann_ids) != n_windows or any(len(a) != length for a in call.ann_ids):
        raise RuntimeError(
            f"token logits {forward.shape} do not match the {len(call.ann_ids)} windows "
            "of word ids deepdoctection passed to predict()"
        )
    return functools.partial(_word_rows, forward, call)


def _word_rows(forward: TokenForward, call: _Call) -> MappedRows:
    n_windows, length, _ = forward.shape
    used = _unpadded_length(call.ann_ids, length)
    ann_ids, tokens = call.ann_ids, call.tokens
    if used < length:
        ann_ids, tokens = [a[:used] for a in ann_ids], [t[:used] for t in tokens]
    serving = call.serving
    positions = None  # only the "first" and "mean" rules tell copies of a token apart
    if forward.rule != "dd" and serving is not None and serving.stride:
        positions = dd_window_positions(n_windows, used, serving.stride)
    rows = word_rows(forward.probs(used), ann_ids, forward.rule, positions=positions,
                     special_word_ids=DD_SPECIAL_WORD_IDS)  # fmt: skip
    tagged = dd_tagged(rows, tokens, serving.special_tokens if serving else ())
    columns: dict[str, Any] = {
        "word_id": rows.word_ids,
        "word": list(map(serving.texts.get, rows.word_ids)) if serving else None,
        "dd_tagged": tagged.astype("int64"),
    }
    if forward.meta is None and call.image_ids:  # a bare wrapper: no page but its id
        columns["image_id"] = call.image_ids[0]
    raw = forward.logits(used) if rows.rule != "mean" else None
    logits = None if raw is None else raw.reshape(-1, raw.shape[-1])[rows.token]
    return MappedRows(rows.probs, list(rows.word_ids), columns, logits)


def _unpadded_length(ann_ids: list[list[str]], length: int) -> int:
    """The positions before the trailing ``[PAD]`` run of the longest window: a page shorter
    than the model's window is mostly padding, which is then never activated nor mapped
    (softmax works row by row, so the rows that are kept come out bit for bit the same)."""
    used = 0
    for window in ann_ids:
        if not window or window[-1] != "[PAD]":
            return length
        first = window.index("[PAD]")
        if window.count("[PAD]") != length - first:  # not one trailing run: keep everything
            return length
        used = max(used, first)
    return used
