"""Optional dependencies: a missing one is an error that names the extra to install.

The core needs only numpy and torch; everything else comes with an extra of ``pyproject.toml``.

Examples:
    >>> from probhook._extras import require
    >>> require("json", "parquet", "a doctest").__name__
    'json'
    >>> require("no_such_module_xyz", "parquet", "to_parquet()")
    Traceback (most recent call last):
    ...
    probhook._extras.MissingExtraError: to_parquet() needs no_such_module_xyz, ...
        "probhook[parquet]"
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRAS: dict[str, tuple[str, ...]] = {
    "deepdoctection": (
        "deepdoctection", "transformers", "timm", "torchvision", "pypdf", "pypdfium2", "pdfplumber",
        "pyarrow", "tqdm", "PIL", "tokenizers",
    ),
    "pandas": ("pandas", "pyarrow"),
    "parquet": ("pyarrow",),
    "notebook": ("matplotlib",),
    "decisions": ("scipy", "pyarrow"),
}  # fmt: skip
"""The modules each extra brings (import names; a test checks them against pyproject.toml)."""


class MissingExtraError(ModuleNotFoundError):
    """An optional package is missing; the message names the extra that installs it."""


def _error(module: str, extra: str, feature: str) -> MissingExtraError:
    return MissingExtraError(
        f'{feature} needs {module}, which is not installed: pip install "probhook[{extra}]"',
        name=module,
    )


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (cheap once imported), or raise [`MissingExtraError`][MissingExtraError]
    naming ``extra``; ``feature`` says what needed it (``"to_parquet()"``, ``"probhook run"``)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or module  # the module itself, or a package it needs
        raise _error(missing, extra, feature) from err


def require_extra(extra: str, feature: str) -> None:
    """Check, without importing them, that every module of ``extra`` is installed (for slow
    imports such as deepdoctection, which must not be imported before its cache is set)."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise _error(module, extra, feature)
