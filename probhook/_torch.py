"""Everything that touches torch on the way from a forward to a row, in one place.

Imported only when a capture starts, so ``import probhook`` never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any, Literal

import torch


def resolve_activation(activation: str, config: Any) -> Literal["softmax", "sigmoid", "none"]:
    """``auto`` is sigmoid for a config with ``problem_type == "multi_label_classification"``."""
    if activation == "auto":
        problem = getattr(config, "problem_type", None)
        return "sigmoid" if problem == "multi_label_classification" else "softmax"
    return activation  # type: ignore[return-value]


def check_hookable(module: Any) -> None:
    """Refuse what cannot take a Python forward hook, naming what it is, and a model on the
    ``meta`` device, which has no values to compute with."""
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
    tensors = chain(module.named_parameters(), module.named_buffers())
    meta = next((name for name, tensor in tensors if tensor.is_meta), None)
    if meta is not None:
        raise ValueError(
            f"{type(module).__name__} has tensors on the meta device (first: {meta!r}): shapes "
            "without values, so no forward can produce probabilities. Load its weights first "
            "(e.g. model.to_empty(device='cpu') and load_state_dict, or from_pretrained without "
            "a meta-device context), then capture it."
        )


def logits_of(
    output: Any, head: str, select: int | str | None = None, ndim: int = 2
) -> torch.Tensor:
    """The ``(batch, classes)`` logits in a forward output (``(batch, tokens, classes)`` for a
    token head, ``ndim=3``), or a clear error about what it was.

    ``select`` (the ``output=`` option) names the tuple index or attribute that holds them;
    otherwise ``.logits``, or the one floating tensor of at least two dimensions in a tuple
    (a Hugging Face ``(loss, logits)``); two candidates are ambiguous and refused.
    """
    plain = select is None and type(output) is torch.Tensor and output.ndim == 2
    if plain and output.is_floating_point():
        return output  # type: ignore[no-any-return]  # the plain classifier case, fast
    if select is not None:
        try:  # an index, a mapping key (a dict output) or an attribute
            if isinstance(select, int) or isinstance(output, Mapping):
                logits = output[select]
            else:
                logits = getattr(output, select)
        except (IndexError, KeyError, TypeError, AttributeError):
            raise TypeError(
                f"head {head!r} returned {_describe(output)}, which has no output={select!r}"
            ) from None
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, Mapping) and "logits" in output:
        logits = output["logits"]
    elif isinstance(output, (tuple, list)):
        found = [t for t in output if _is_float_tensor(t) and t.ndim >= 2]
        if len(found) != 1:
            raise TypeError(
                f"head {head!r} returned {_describe(output)}: which element holds the logits "
                "is ambiguous; name it with output=<index>, or select the classifier module "
                "with heads="
            )
        logits = found[0]
    else:
        logits = output
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"head {head!r} returned {_describe(logits)}, not a tensor or an object with "
            ".logits; select the classifier module with heads= or the element with output="
        )
    if not logits.is_floating_point():
        raise TypeError(
            f"head {head!r} returned a {logits.dtype} tensor of shape {tuple(logits.shape)}, "
            "not floating (batch, classes) logits: a prediction, not a classifier head? Select "
            "the module before it with heads="
        )
    if logits.ndim == 3 and ndim == 2:
        raise NotImplementedError(
            f"head {head!r} returned token-level logits of shape {tuple(logits.shape)}, but it "
            "is not a token-classification head that probhook can map to words: capture the "
            "whole *ForTokenClassification model (or a deepdoctection token classifier)"
        )
    if logits.ndim != ndim:
        expected = "(batch, classes)" if ndim == 2 else "(batch, tokens, classes)"
        raise ValueError(
            f"head {head!r} returned logits of shape {tuple(logits.shape)}; expected {expected}: "
            "select the classifier module with heads="
        )
    return logits


def _is_float_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        parts = ", ".join(_describe(v) for v in value)
        return f"a {type(value).__name__} of [{parts}]"
    if isinstance(value, Mapping):
        parts = ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items())
        return f"a {type(value).__name__} of {{{parts}}}"
    return f"a {type(value).__name__}"


def training_layers(module: Any) -> str | None:
    """The layers that make a module in training mode give other outputs each call (dropout,
    batch norm), named for a warning; None when there are none or the module is in eval
    mode."""
    kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    found = sorted(
        {type(m).__name__ for m in module.modules() if m.training and isinstance(m, kinds)}
    )
    if not found:
        return None
    return ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")


def known_width(module: Any, config: Any) -> int | None:
    """The head's number of outputs when it can be told before a forward."""
    labels = getattr(config, "num_labels", None)
    if isinstance(labels, int):
        return labels
    width = getattr(module, "out_features", None)
    return width if isinstance(width, int) else None


def make_activation(activation: str, temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-forward function for a head, resolved once: float32 probabilities (or scaled
    logits for ``"none"``) from logits, on the logits' device, detached."""

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
