"""Adapters that let ``capture_probs`` understand framework objects.

An adapter says which heads a target has, which page columns its rows carry, what it patches on
instances while a capture runs, and how a user's key (a page, say) maps to a stored key. A
framework's adapter is imported only when a target comes from that framework, so probhook works
without any of them installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from probhook.heads import HeadSpec, Selector, find_heads
from probhook.rows import ColumnKind

if TYPE_CHECKING:
    from probhook.capture import Capture

_FRAMEWORK_MODULES = ("deepdoctection.", "dd_core.")


class Adapter(Protocol):
    """What an integration provides so that ``capture_probs`` understands its objects."""

    columns: Mapping[str, ColumnKind]

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        """The heads to hook, resolved when the capture starts."""

    def install(self, capture: Capture, stack: contextlib.ExitStack) -> None:
        """Instance-level patches for the capture's duration, undone by ``stack``."""

    def key_of(self, key: Any) -> Any:
        """The stored key for what a user passes to ``cap.get``."""


class ModuleAdapter:
    """Plain modules and Hugging Face models: heads by discovery, keys as given."""

    columns: Mapping[str, ColumnKind] = {}

    def __init__(self, target: Any) -> None:
        self.target = target

    def heads(self, selector: Selector | None) -> list[HeadSpec]:
        """Heads found by :func:`probhook.heads.find_heads`."""
        return find_heads(self.target, selector)

    def install(self, capture: Capture, stack: contextlib.ExitStack) -> None:
        """Nothing to patch: forward hooks alone see every row."""

    def key_of(self, key: Any) -> Any:
        """Keys are stored as given."""
        return key


def adapter_for(target: Any) -> Adapter:
    """The framework adapter for ``target`` if probhook knows its framework, else a
    :class:`ModuleAdapter`."""
    module = type(target).__module__ + "."
    if module.startswith(_FRAMEWORK_MODULES):
        from probhook.integrations.deepdoctection import DeepdoctectionAdapter

        return DeepdoctectionAdapter(target)
    return ModuleAdapter(target)
