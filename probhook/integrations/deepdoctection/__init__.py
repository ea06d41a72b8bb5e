"""deepdoctection: the capture adapter, the analyzer set-up shared by the command line and the
test kit, and the kit itself (``probhook.testing``). Imported only for deepdoctection targets."""

from probhook.integrations.deepdoctection.adapter import DeepdoctectionAdapter
from probhook.integrations.deepdoctection.analyzer import analyzer_from_folder
from probhook.integrations.deepdoctection.pixels import skip_unused_pixels

__all__ = ["DeepdoctectionAdapter", "analyzer_from_folder", "skip_unused_pixels"]
