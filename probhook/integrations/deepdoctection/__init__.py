"""deepdoctection: the capture adapter, the analyzer set-up shared by the command line and the
test kit, and the kit itself (``probhook.testing``). Imported only for deepdoctection targets."""

from probhook.integrations.deepdoctection.adapter import DeepdoctectionAdapter

__all__ = ["DeepdoctectionAdapter"]
