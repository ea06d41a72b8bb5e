"""Hugging Face ``transformers`` pipelines: one row per input, keyed by its position in the call.

``capture_probs`` accepts a ``Pipeline`` whose model is a classifier (``text-classification``,
``image-classification``, which also serves document-image classifiers, and
``token-classification``) or a list of them:

    clf = pipeline("text-classification", model=folder)
    with capture_probs(clf) as cap:
        clf(["first text", "second text"])
    cap.get(1).top_k(2)            # the second input of the call

A row's key is the input's index in the call (0 for a single input; for a list or a
``KeyDataset``, its index), and its ``call`` column counts the pipeline's calls inside the
capture, from 0. Labels come from ``config.id2label``. Probabilities follow the pipeline's
own ``function_to_apply`` rule (softmax; sigmoid for multi-label or single-output models; none
for regression), or the one given when the pipeline was built, so a row equals
``clf(x, top_k=None)``. The pipeline's ``_sanitize_parameters`` (run once per call: a new call
restarts the positions) and ``forward`` are wrapped *on the instance* for the capture's
duration; one pipeline is not to be called from two threads at once.

A token-classification pipeline gives one row per token the pipeline scores (attended, not a
special token), keyed ``(input position, token index)`` with ``token_index``, ``chunk`` and the
token's characters ``start`` .. ``end`` in the input (a fast tokenizer's offsets; missing for a
slow one) as columns; its softmax equals the pipeline's per-token ``score`` and argmax its
``entity`` (``aggregation_strategy`` "none"), whichever tokens the pipeline then drops as
``ignore_labels``. Called with ``stride=``, the pipeline splits a long input into overlapping
chunks: the token index stays the index in the whole input (as if it were one chunk), so a token
in the overlap of two chunks has a row from each, told apart by ``chunk`` (``get`` returns the
later one); an aggregated entity's tokens are the rows of its input whose ``start`` .. ``end``
lie within the entity's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from probhook.block import INT_NA, ColumnKind
from probhook.heads import Forward, HeadSpec, MappedRows, config_labels, matches
from probhook.options import Selector

if TYPE_CHECKING:
    from probhook.integrations import CaptureHost

TASKS = ("text-classification", "image-classification", "token-classification")
"""Pipeline tasks probhook captures: one row per input, or per token for token classification."""
TOKEN_TASK = "token-classification"
# metadata entries of a token pipeline's forward: its special-token mask, its token offsets and
# each sequence's input position, chunk and token index shift
_SPECIAL, _OFFSETS = "probhook.special_tokens_mask", "probhook.offsets"
_CHUNKS = "probhook.chunks"
TOKEN_COLUMNS: Mapping[str, ColumnKind] = {"token_index": "int", "chunk": "int", "start": "int",
                                           "end": "int"}  # fmt: skip


def activation_of(pipe: Any, function_to_apply: Any = None) -> str:
    """The pipeline's ``function_to_apply`` as a capture activation (its postprocess rule)."""
    chosen = function_to_apply or pipe._postprocess_params.get("function_to_apply")
    if chosen is not None:
        name = str(getattr(chosen, "value", chosen)).lower()
        return {"softmax": "softmax", "sigmoid": "sigmoid", "none": "none"}[name]
    config = pipe.model.config
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def token_rows(forward: Forward) -> Callable[[], MappedRows] | None:
    """One forward of a token-classification pipeline: a row per token it scores, keyed
    ``(input position, token index in the input)`` (None: the model was called outside the
    pipeline)."""
    meta = forward.meta or {}
    special = meta.get(_SPECIAL)
    if special is None:
        return None
    n, length, _ = forward.shape
    keep = _host(special).reshape(n, length) == 0
    mask = forward.kwargs.get("attention_mask")
    if mask is not None:
        keep &= _host(mask).reshape(n, length).astype(bool)
    seq, tok = np.nonzero(keep)
    position, chunk, shift = np.asarray(meta[_CHUNKS], np.int64).reshape(n, 3).T
    index = shift[seq] + tok
    keys = list(zip(position[seq].tolist(), index.tolist(), strict=True))
    offsets = meta.get(_OFFSETS)
    if offsets is not None:
        spans = _host(offsets).reshape(n, length, 2)[seq, tok].astype(np.int64)
        start, end = spans[:, 0], spans[:, 1]
    else:  # a slow tokenizer has no offsets
        start = end = np.full(len(seq), INT_NA, np.int64)
    columns = {"token_index": index, "chunk": chunk[seq], "start": start, "end": end}

    def rows() -> MappedRows:
        probs, raw = forward.probs(), forward.logits()
        logits = None if raw is None else raw[seq, tok]
        return MappedRows(probs[seq, tok], keys, columns, logits)

    return rows


def _host(values: Any) -> Any:
    return np.asarray(values.cpu() if hasattr(values, "cpu") else values)


def _chunks(model_inputs: Mapping[str, Any], n: int, state: dict[str, int]) -> list[list[int]]:
    """``[input position, chunk, token index shift]`` of each sequence of a token pipeline's
    forward. With ``stride=`` the pipeline splits an input into chunks (``is_last`` marks its
    last) that overlap by ``stride`` tokens: chunk ``c + 1`` starts ``scored(c) - stride`` tokens
    after chunk ``c``, so a token's index in the input is its index in the chunk plus the shift."""
    last = model_inputs.get("is_last", True)
    lasts = [bool(x) for x in last] if isinstance(last, (list, tuple)) else [bool(last)] * n
    special, mask = model_inputs.get("special_tokens_mask"), model_inputs.get("attention_mask")
    scored = np.zeros(n, np.int64)
    if special is not None:
        keep = _host(special).reshape(n, -1) == 0
        if mask is not None:
            keep &= _host(mask).reshape(n, -1).astype(bool)
        scored = keep.sum(axis=1)
    chunks = []
    for i in range(n):
        chunks.append([state["next"], state["chunk"], state["shift"]])
        if lasts[i]:
            state["next"], state["chunk"], state["shift"] = state["next"] + 1, 0, 0
        else:
            state["chunk"] += 1
            state["shift"] += int(scored[i]) - state["stride"]
    return chunks


def _stride(pipe: Any, sanitized: Any) -> int:
    """The ``stride`` a call of a token pipeline splits its inputs with (0: none), given in the
    call or when the pipeline was built."""
    for params in (sanitized[0], pipe._preprocess_params):
        stride = ((params or {}).get("tokenizer_params") or {}).get("stride")
        if stride is not None:
            return int(stride)
    return 0


def _batch_size(model_inputs: Any) -> int:
    """Rows one forward produces: the leading size of its first tensor input."""
    values = model_inputs.values() if isinstance(model_inputs, Mapping) else [model_inputs]
    for value in values:
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1:
            return int(shape[0])
    return 1


class PipelineAdapter:
    """Hooks the model of each pipeline and keys rows by the input's position in the call."""

    columns: Mapping[str, ColumnKind] = {"call": "int"}

    def __init__(self, target: Any) -> None:
        self.pipes = list(target) if isinstance(target, (list, tuple)) else [target]
        for pipe in self.pipes:
            task = getattr(pipe, "task", None)
            if not hasattr(pipe, "model") or not hasattr(pipe, "forward"):
                raise TypeError(
                    f"capture_probs got {type(pipe).__name__} in a list of pipelines; pass "
                    "transformers Pipeline objects (or lists of them) only"
                )
            if task not in TASKS:
                raise NotImplementedError(
                    f"capture_probs supports {', '.join(TASKS)} pipelines, got a {task!r} "
                    f"pipeline ({type(pipe).__name__}): capture its model instead"
                )

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        """One head per pipeline, named by its task (``#2`` ... for repeats)."""
        specs: list[HeadSpec] = []
        for pipe in self.pipes:
            name, i = pipe.task, 2
            while name in {s.name for s in specs}:
                name, i = f"{pipe.task}#{i}", i + 1
            labels = config_labels(pipe.model)
            if pipe.task == TOKEN_TASK:  # the pipeline takes a softmax over each token
                spec = HeadSpec(name, pipe.model, labels, activation="softmax",
                                rows_of=token_rows, columns=dict(TOKEN_COLUMNS))  # fmt: skip
                specs.append(spec)
            else:
                specs.append(HeadSpec(name, pipe.model, labels, activation=activation_of(pipe)))
        if selector is not None:
            selectors = selector if isinstance(selector, (list, tuple)) else [selector]
            specs = [s for s in specs if any(matches(x, s.name, s.module) for x in selectors)]
            if not specs:
                raise ValueError(f"no pipeline matched heads={selector!r}")
        self._specs = specs
        return specs

    def install(self, host: CaptureHost, stack: contextlib.ExitStack) -> None:
        """Wrap each pipeline's ``__call__`` (a new call: positions restart) and ``forward``
        (the rows of one forward get the next positions) on the instance."""
        hooked = {id(s.module): s for s in self._specs}
        for pipe in self.pipes:
            spec = hooked.get(id(pipe.model))
            if spec is not None:
                _wrap(pipe, spec, host, stack)

    def key_of(self, key: Any) -> Any:
        """Keys are input positions, stored as given."""
        return key


def _wrap(pipe: Any, spec: HeadSpec, host: CaptureHost, stack: contextlib.ExitStack) -> None:
    state = {"call": -1, "next": 0, "chunk": 0, "shift": 0, "stride": 0}
    originals = {name: getattr(pipe, name) for name in ("_sanitize_parameters", "forward")}
    own = {name for name in originals if name in vars(pipe)}
    tokens = pipe.task == TOKEN_TASK

    def sanitize(**kwargs: Any) -> Any:
        # each call of the pipeline sanitizes its keyword arguments once, before any forward
        asked = kwargs.get("function_to_apply")
        if asked is not None and activation_of(pipe, asked) != spec.activation:
            raise ValueError(
                f"function_to_apply={asked!r} differs from the {spec.activation} the capture "
                "applies: give it when building the pipeline, or activation= to capture_probs"
            )
        sanitized = originals["_sanitize_parameters"](**kwargs)
        state.update(call=state["call"] + 1, next=0, chunk=0, shift=0)
        if tokens:
            state["stride"] = _stride(pipe, sanitized)
        return sanitized

    def forward(model_inputs: Any, **forward_params: Any) -> Any:
        n = _batch_size(model_inputs)
        meta: dict[str, Any] = {"call": max(state["call"], 0)}
        if tokens and isinstance(model_inputs, Mapping):
            chunks = _chunks(model_inputs, n, state)  # an input's chunks keep its position
            meta.update({"key": [c[0] for c in chunks] if n > 1 else chunks[0][0],
                         _CHUNKS: chunks, _SPECIAL: model_inputs.get("special_tokens_mask"),
                         _OFFSETS: model_inputs.get("offset_mapping")})  # fmt: skip
        else:
            first = state["next"]
            state["next"] = first + n
            meta["key"] = first if n == 1 else list(range(first, first + n))
        token = host.set_meta(meta)
        try:
            return originals["forward"](model_inputs, **forward_params)
        finally:
            host.reset_meta(token)

    def restore() -> None:
        for name, original in originals.items():
            if name in own:
                setattr(pipe, name, original)
            else:
                delattr(pipe, name)

    pipe._sanitize_parameters, pipe.forward = sanitize, forward
    stack.callback(restore)
