"""Finding classifier heads in a module tree.

The vocabulary shared by every target (plain modules, Hugging Face models, integrations):

* a *head* is a module whose forward output is a ``(batch, classes)`` tensor or has ``.logits``:
  one row per input (a page);
* a *mapped head* (a word head: ``(batch, tokens, classes)``; an element head: a detector's
  queries) carries a [`RowMapper`][RowMapper] that turns each [`Forward`][Forward] into its
  rows ([`MappedRows`][MappedRows]: one per word or element), grouped by a page column;
* a *selector* (``heads=``) picks heads by dotted name, glob, module type or predicate
  ([`matches`][matches] decides one entry, for every integration alike).

Turning a head's logits into probabilities is ``probhook._torch``'s job.

Examples:
    >>> import torch
    >>> from probhook.heads import find_heads
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> print(*[h.name for h in find_heads(model)])
    model
    >>> print(*[h.name for h in find_heads(model, heads="2")])
    2
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from probhook.options import Selector

if TYPE_CHECKING:
    import torch

    from probhook.block import ColumnKind

Kind = Literal["page", "word", "element"]


@dataclass(frozen=True)
class Forward:
    """What a mapped head's row mapper sees of one forward: its logits, how to activate them,
    the forward's keyword arguments and the capture's metadata current in its context (page
    columns, and what an integration put there for this forward).

    The logits stay on their device (a copy: the caller may change its own output later): the
    mapper asks for ``probs(n)`` (and ``logits(n)``) once, for the first ``n`` positions of
    every sequence, so that padding past the last used position is never activated nor copied
    to the host.
    """

    output: Any  # (sequences, positions, classes) logits, a tensor or an array
    activate: Callable[[Any], npt.NDArray[np.float32]]  # logits -> host float32 probabilities
    keep: Callable[[Any], npt.NDArray[np.float32]] | None  # logits -> host float32, if kept
    kwargs: Mapping[str, Any]  # the forward's keyword arguments
    meta: Mapping[str, Any] | None  # the capture's metadata current in this context
    rule: str  # the capture's word_rule

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(sequences, positions, classes)``."""
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
    """The rows a mapped head's forward becomes: probabilities, keys and column values."""

    probs: npt.NDArray[np.float32]
    keys: list[Any]
    columns: dict[str, Any]
    logits: npt.NDArray[np.float32] | None = None


RowMapper = Callable[[Forward], "Callable[[], MappedRows] | None"]
"""A mapped head's mapper: called in the forward hook, it checks the forward (a mismatch raises
there) and returns the function that makes its rows (None: not attributable), which the writer
runs later, with the next drain (see ``probhook.writer``): it holds, not looks up, what it
needs of the forward's context."""


@dataclass
class HeadSpec:
    r"""One head to hook: its display name, its module, its labels (None: from the output) and
    the activation an integration knows its framework applies (None: the ``auto`` rule).

    A mapped head also has ``rows_of`` (see [`RowMapper`][RowMapper]), its ``kind`` (``"word"``
    or ``"element"``), the extra ``columns`` its rows carry, and the column that ``group``\ s
    its rows (their page: ``cap.words(page)`` reads one group).
    A ``staged`` head has no forward hook: its integration hands its rows to the capture
    (``CaptureHost.stage_rows``) once it can key them (a detector's elements, keyed by the
    annotations its service creates after the forward).
    """

    name: str
    module: torch.nn.Module
    labels: tuple[str, ...] | None = None
    config: Any = None  # the Hugging Face config the head belongs to (labels, problem type)
    activation: str | None = None
    rows_of: RowMapper | None = None
    columns: Mapping[str, ColumnKind] = field(default_factory=dict)
    kind: Kind = "page"
    group: str | None = None
    staged: bool = False


def config_labels(module: Any) -> tuple[str, ...] | None:
    """Labels from a Hugging Face config's ``id2label``, in column order, if it has any."""
    config = getattr(module, "config", None)
    id2label = getattr(config, "id2label", None)
    if not id2label:
        return None
    return tuple(str(id2label[i]) for i in sorted(id2label, key=int))


def _is_hf_classifier(module: Any) -> bool:
    name = type(module).__name__
    return hasattr(module, "config") and "For" in name and name.endswith("Classification")


def _is_token_classifier(module: Any) -> bool:
    return _is_hf_classifier(module) and type(module).__name__.endswith("ForTokenClassification")


def _spec(name: str, module: Any, labels: tuple[str, ...] | None, owner: Any) -> HeadSpec:
    """A head found in a module tree (``owner``: the model whose config it uses); a
    ``*ForTokenClassification`` model is a word head, whose mapper its framework's integration
    gives (``probhook.integrations``)."""
    kind: Kind = "word" if _is_token_classifier(owner) else "page"
    return HeadSpec(name, module, labels, getattr(owner, "config", None), kind=kind)


def _refuse_inside_token_classifier(named: list[tuple[str, Any]], found: list[str]) -> None:
    """A module inside a token classifier outputs token rows nothing can map to words."""
    for outer, module in named:
        if not _is_token_classifier(module):
            continue
        inner = [n for n in found if n != outer and n.startswith(f"{outer}." if outer else "")]
        if inner:
            raise ValueError(
                f"heads= selected {inner[0]!r} inside the token classifier "
                f"{outer or '<root>'} ({type(module).__name__}): its (batch, tokens, classes) "
                "output can only be mapped to words at the classifier itself; select "
                f"{outer or 'the model'!r} (or leave heads= unset)"
            )


def matches(selector: Any, name: str, module: Any) -> bool:
    """Whether one ``heads=`` entry selects the module ``module`` named ``name``."""
    if isinstance(selector, str):
        return name == selector or fnmatch.fnmatchcase(name, selector)
    if isinstance(selector, type):
        return isinstance(module, selector)
    if callable(selector):
        return bool(selector(name, module))
    raise TypeError(
        f"heads= entries must be a dotted name, glob, module type or predicate, got {selector!r}"
    )


def _outermost(found: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Drop modules nested in (or identical to) another selected one: no row is captured twice."""
    kept: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for name, module in found:  # named_modules order: parents before children
        if id(module) in seen:
            continue
        kept.append((name, module))
        seen.update(id(m) for m in module.modules())
    return kept


def find_heads(
    target: Any, heads: Selector | None = None, *, root_name: str = "model"
) -> list[HeadSpec]:
    """The heads of ``target`` (a module or a list of modules), each with a readable name.

    Without ``heads=``: every outermost Hugging Face ``*For...Classification`` model, else the
    target itself, whatever its layers (a ``Conv2d`` head, a quantized or a functional
    ``F.linear`` one): its first forward decides, and an output that is not ``(batch, classes)``
    floating logits is refused then. A ``torch.compile`` wrapper is
    hooked from outside, so the compiled graph is untouched.
    """
    modules = list(target) if isinstance(target, (list, tuple)) else [target]
    if not modules:
        raise ValueError("capture_probs got an empty list of modules")
    from probhook._torch import check_hookable

    specs: list[HeadSpec] = []
    for i, module in enumerate(modules):
        check_hookable(module)
        name = root_name if len(modules) == 1 else f"{root_name}{i}"
        specs.extend(_heads_of(module, heads, name))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"head names must be unique, got {names}")
    twice = [s.name for i, s in enumerate(specs) if any(s.module is t.module for t in specs[:i])]
    if twice:  # one forward would be captured once per occurrence, as different heads
        raise ValueError(f"the same module is given twice (again as {twice}): pass it once")
    return specs


def _heads_of(module: Any, heads: Selector | None, root_name: str) -> list[HeadSpec]:
    compiled = getattr(module, "_orig_mod", None)
    if compiled is not None:
        if heads is not None:
            raise ValueError(
                "heads= cannot select inside a torch.compile'd module (hooks inside would be "
                "traced into the graph); pass the uncompiled module or leave heads= unset"
            )
        return [_spec(root_name, module, config_labels(compiled), compiled)]
    named = list(module.named_modules())
    if heads is None:
        # no static guess about the layers (a Conv2d head, a quantized or functional Linear):
        # the target itself is the head, and its first forward output must be (batch, classes)
        found = [(n, m) for n, m in named if _is_hf_classifier(m)] or [("", module)]
    else:
        selectors = heads if isinstance(heads, (list, tuple)) else [heads]
        found = [(n, m) for n, m in named if any(matches(s, n, m) for s in selectors)]
        if not found:
            raise ValueError(_not_found(module, named, f"nothing matched heads={heads!r}"))
    owners = dict(named)
    kept = _outermost(found)
    _refuse_inside_token_classifier(named, [n for n, _ in kept])
    specs = []
    for n, m in kept:
        owner = _config_owner(owners, n)  # a selected classifier layer keeps its model's labels
        specs.append(_spec(root_name if n == "" else n, m, config_labels(owner), owner))
    return specs


def _config_owner(modules: dict[str, Any], name: str) -> Any:
    """The module ``name`` or its nearest ancestor that carries a Hugging Face config."""
    parts = name.split(".") if name else []
    for i in range(len(parts), -1, -1):
        module = modules.get(".".join(parts[:i]))
        if getattr(getattr(module, "config", None), "id2label", None):
            return module
    return modules[name]


def _not_found(module: Any, named: list[tuple[str, Any]], why: str) -> str:
    listing = ", ".join(f"{n or '<root>'} ({type(m).__name__})" for n, m in named[:15])
    more = f" and {len(named) - 15} more" if len(named) > 15 else ""
    return (
        f"found no classifier head in {type(module).__name__}: {why}. Searched: {listing}{more}. "
        "Select heads explicitly, e.g. capture_probs(model, heads='classifier'), a glob such as "
        "heads='*.classifier', a module type, or a predicate lambda name, module: ..."
    )
