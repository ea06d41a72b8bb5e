"""deepdoctection token classifiers: one row per word, keyed by the word's ``annotation_id``.

``LMTokenClassifierService.serve(dp)`` turns a page into encodings and calls
``language_model.predict(**encodings)``, which runs the model once over all sliding windows. The
encodings carry each token position's word (``ann_ids``, with ``"[CLS]"``/``"[SEP]"``/``"[PAD]"``
placeholders), its token string and its id: everything the word rules of
[`probhook.words`][probhook.words] need. For the duration of a capture, ``predict`` is wrapped *on
the wrapper instance* (and ``serve`` on the service instance, by the adapter) to make them current
in a ``ContextVar``; the head's forward hook reads them. Classes are never touched; a forward
outside ``predict`` (user code, training) gives no rows.

Rows: the key and ``word_id`` are the word's ``annotation_id``; ``word`` its text; ``dd_tagged``
is 1 when deepdoctection stores a ``token_tag`` for the word (it drops a word whose chosen token
is a ``##`` continuation or a special token; such a word still has a row, with 0 here).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probhook.words import (
    MappedRows,
    TokenForward,
    dd_tagged,
    dd_window_positions,
    dd_word_ids,
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
    service: Any
    page: Any


@dataclass(frozen=True)
class _Call:
    """The encodings of the one forward about to run, and where they come from."""

    ann_ids: list[list[str]]
    tokens: list[list[str]]
    input_ids: Any
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


@contextlib.contextmanager
def serving(service: Any, page: Any) -> Iterator[None]:
    """While ``service`` serves ``page``: what its wrapper's ``predict`` attributes rows to."""
    token = _SERVING.set(_Serving(service, page))
    try:
        yield
    finally:
        _SERVING.reset(token)


def wrap_predict(wrapper: Any, stack: contextlib.ExitStack) -> None:
    """Wrap ``wrapper.predict`` on the instance (undone by ``stack``): its encodings become
    current for the forward it runs."""
    had_own = "predict" in vars(wrapper)
    original = wrapper.predict

    def predict(**encodings: Any) -> Any:
        call = _Call(
            encodings.get("ann_ids") or [],
            encodings.get("tokens") or [],
            encodings.get("input_ids"),
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


def word_texts(page: Any, word_ids: list[Any]) -> list[str | None]:
    """The text of each word (``WordKey.CHARACTERS``), None where it has none."""
    if page is None:
        return [None] * len(word_ids)
    from deepdoctection import WordKey

    # one pass over the page's annotations (``get_annotation(annotation_ids=...)`` filters
    # with several predicates per annotation: twice the time for the same dict)
    found = {a.annotation_id: a for a in page.annotations}
    texts: list[str | None] = []
    for word_id in word_ids:
        ann = found.get(word_id)
        chars = None if ann is None else ann.sub_categories.get(WordKey.CHARACTERS)
        texts.append(None if chars is None else chars.value)
    return texts


def rows_of(forward: TokenForward) -> MappedRows | None:
    """The word rows of one forward of a deepdoctection token model (None: not from predict)."""
    call = _CALL.get()
    if call is None:
        return None
    n_windows, length, _ = forward.probs.shape
    if len(call.ann_ids) != n_windows or any(len(a) != length for a in call.ann_ids):
        raise RuntimeError(
            f"token logits {forward.probs.shape} do not match the {len(call.ann_ids)} windows "
            "of word ids deepdoctection passed to predict()"
        )
    service = call.serving.service if call.serving is not None else None
    stride = getattr(service, "sliding_window_stride", 0) or 0
    rows = word_rows(
        forward.probs,
        dd_word_ids(call.ann_ids),
        forward.rule,
        positions=dd_window_positions(n_windows, length, stride),
    )
    tokenizer = getattr(service, "tokenizer", None)
    special = [
        getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "sep", "pad")
    ]  # fmt: skip
    tagged = dd_tagged(rows, call.tokens, call.input_ids, [i for i in special if i is not None])
    columns: dict[str, Any] = {
        "word_id": rows.word_ids,
        "word": word_texts(call.serving.page if call.serving else None, rows.word_ids),
        "dd_tagged": tagged.astype("int64"),
    }
    if forward.meta is None and call.image_ids:  # a bare wrapper: no page but its id
        columns["image_id"] = call.image_ids[0]
    logits = None
    if forward.logits is not None and rows.rule != "mean":
        logits = forward.logits.reshape(-1, forward.logits.shape[-1])[rows.token]
    return MappedRows(rows.probs, list(rows.word_ids), columns, logits)
