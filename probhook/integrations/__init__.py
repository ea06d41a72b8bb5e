"""Adapters that let ``capture_probs`` understand framework objects.

An integration is imported only when a target comes from its framework, so probhook works
without any of them installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probhook.capture import Adapter

_FRAMEWORK_MODULES = ("deepdoctection.", "dd_core.")


def integration_for(target: Any) -> Adapter | None:
    """The adapter for ``target`` if it is a framework object probhook knows, else None."""
    module = type(target).__module__ + "."
    if module.startswith(_FRAMEWORK_MODULES):
        from probhook.integrations.deepdoctection import DeepdoctectionAdapter

        return DeepdoctectionAdapter(target)
    return None
