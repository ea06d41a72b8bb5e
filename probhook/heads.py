"""Finding classifier heads in a module tree, and turning their logits into probabilities.

The vocabulary shared by every target (plain modules, Hugging Face models, integrations):

* a *head* is a module whose forward output is a ``(batch, classes)`` tensor or has ``.logits``;
* a *selector* (``heads=``) picks heads by dotted name, glob, module type or predicate;
* an *activation* turns logits into the numbers kept: ``softmax``, ``sigmoid`` or ``none``.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    import torch

Activation = Literal["auto", "softmax", "sigmoid", "none"]
ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")
Predicate = Callable[[str, Any], bool]
Selector = Union[str, type, Predicate, Sequence[Union[str, type, Predicate]]]  # noqa: UP007


@dataclass
class HeadSpec:
    """One head to hook: its display name, module, activation and labels (None: from the output)."""

    name: str
    module: torch.nn.Module
    activation: Literal["softmax", "sigmoid", "none"] = "softmax"
    labels: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def config_labels(module: Any) -> tuple[str, ...] | None:
    """Labels from a Hugging Face config's ``id2label``, in column order, if it has any."""
    config = getattr(module, "config", None)
    id2label = getattr(config, "id2label", None)
    if not id2label:
        return None
    return tuple(str(id2label[i]) for i in sorted(id2label, key=int))


def resolve_activation(activation: str, module: Any) -> Literal["softmax", "sigmoid", "none"]:
    """``auto`` is sigmoid for a config with ``problem_type == "multi_label_classification"``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation == "auto":
        problem = getattr(getattr(module, "config", None), "problem_type", None)
        return "sigmoid" if problem == "multi_label_classification" else "softmax"
    return activation  # type: ignore[return-value]


def _is_hf_classifier(module: Any) -> bool:
    name = type(module).__name__
    return hasattr(module, "config") and "For" in name and name.endswith("Classification")


def _matches(selector: Any, name: str, module: Any) -> bool:
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


def check_hookable(module: Any) -> None:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError(
            f"{type(module).__name__} is a TorchScript module: it runs compiled code and cannot "
            "take new Python forward hooks. Capture the eager model before torch.jit.script/trace."
        )
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"capture_probs needs a torch.nn.Module, a list of modules or a deepdoctection object; "
            f"got {type(module).__name__}"
        )


def find_heads(
    target: Any, heads: Selector | None = None, *, root_name: str = "model"
) -> list[HeadSpec]:
    """The heads of ``target`` (a module or a list of modules), each with a readable name.

    Without ``heads=``: every outermost Hugging Face ``*For...Classification`` model, else the
    target itself (its output is checked at the first forward). A ``torch.compile`` wrapper is
    hooked from outside, so the compiled graph is untouched.
    """
    modules = list(target) if isinstance(target, (list, tuple)) else [target]
    if not modules:
        raise ValueError("capture_probs got an empty list of modules")
    specs: list[HeadSpec] = []
    for i, module in enumerate(modules):
        check_hookable(module)
        name = root_name if len(modules) == 1 else f"{root_name}{i}"
        specs.extend(_heads_of(module, heads, name))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"head names must be unique, got {names}")
    return specs


def _heads_of(module: Any, heads: Selector | None, root_name: str) -> list[HeadSpec]:
    import torch

    compiled = getattr(module, "_orig_mod", None)
    if compiled is not None:
        if heads is not None:
            raise ValueError(
                "heads= cannot select inside a torch.compile'd module (hooks inside would be "
                "traced into the graph); pass the uncompiled module or leave heads= unset"
            )
        return [HeadSpec(root_name, module, labels=config_labels(compiled))]
    named = list(module.named_modules())
    if heads is None:
        found = [(n, m) for n, m in named if _is_hf_classifier(m)]
        if not found:
            if not any(isinstance(m, torch.nn.Linear) for _, m in named):
                raise ValueError(
                    _not_found(module, named, "no Linear layer and no *ForSequenceClassification")
                )
            found = [("", module)]
    else:
        selectors = heads if isinstance(heads, (list, tuple)) else [heads]
        found = [(n, m) for n, m in named if any(_matches(s, n, m) for s in selectors)]
        if not found:
            raise ValueError(_not_found(module, named, f"nothing matched heads={heads!r}"))
    return [
        HeadSpec(root_name if n == "" else n, m, labels=config_labels(m))
        for n, m in _outermost(found)
    ]


def _not_found(module: Any, named: list[tuple[str, Any]], why: str) -> str:
    listing = ", ".join(f"{n or '<root>'} ({type(m).__name__})" for n, m in named[:15])
    more = f" and {len(named) - 15} more" if len(named) > 15 else ""
    return (
        f"found no classifier head in {type(module).__name__}: {why}. Searched: {listing}{more}. "
        "Select heads explicitly, e.g. capture_probs(model, heads='classifier'), a glob such as "
        "heads='*.classifier', a module type, or a predicate lambda name, module: ..."
    )


def logits_of(output: Any, head: str) -> torch.Tensor:
    """The ``(batch, classes)`` logits in a forward output, or a clear error about what it was."""
    import torch

    if type(output) is torch.Tensor and output.ndim == 2:  # the plain classifier case, fast
        return output
    logits = getattr(output, "logits", output)
    if isinstance(logits, (tuple, list)) and logits and isinstance(logits[0], torch.Tensor):
        logits = logits[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"head {head!r} returned {type(output).__name__}, not a tensor or an object with "
            ".logits; select the classifier module with heads="
        )
    if logits.ndim == 3:
        raise NotImplementedError(
            f"head {head!r} returned token-level logits of shape {tuple(logits.shape)}; "
            "token-classification heads are not yet supported"
        )
    if logits.ndim != 2:
        raise ValueError(
            f"head {head!r} returned logits of shape {tuple(logits.shape)}; "
            "expected (batch, classes)"
        )
    return logits


def make_activation(activation: str, temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-forward function for a head, resolved once: float32 probabilities (or scaled
    logits for ``"none"``) from logits, on the logits' device, detached."""
    import torch

    float32, softmax = torch.float32, torch.softmax
    if activation == "softmax" and temperature == 1.0:  # the common case, kept lean

        def apply_softmax(logits: torch.Tensor) -> torch.Tensor:
            x = logits.detach()  # detached: no graph is built, so no no_grad() is needed
            # float32, as deepdoctection computes its own score
            return softmax(x if x.dtype is float32 else x.float(), -1)

        return apply_softmax
    functions: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "softmax": lambda x: softmax(x, -1),
        "sigmoid": torch.sigmoid,
        "none": lambda x: x,
    }
    fn = functions[activation]

    def apply(logits: torch.Tensor) -> torch.Tensor:
        x = logits.detach()
        if x.dtype is not float32:
            x = x.float()
        return fn(x / temperature if temperature != 1.0 else x)

    return apply


def to_host(values: torch.Tensor) -> Any:
    """A numpy view of a CPU tensor, or one device-to-host copy of any other."""
    # asked, not tried: a failed .numpy() raises through C++ and costs more than the copy
    return values.numpy() if values.is_cpu else values.cpu().numpy()
