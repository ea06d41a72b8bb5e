"""The package's metadata and files: license, authors, URLs, changelog; every third-party
module probhook imports is declared, and every declared package is used or says why."""

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
URL = "https://github.com/probhook/probhook"
IMPORT_NAME = {"pillow": "PIL", "ray": "ray"}
# declared for a package probhook drives, not imported by probhook itself
WHY_DECLARED = {
    "timm": "deepdoctection's LayoutLM wrappers import it without declaring it",
    "torchvision": "timm needs it, in the build that matches torch",
    "pdfplumber": "deepdoctection's PDF text extraction",
    "pypdfium2": "deepdoctection renders PDF pages with it",
}
# imported, and installed by a declared package
COMES_WITH = {"dd_core": "deepdoctection (1.x splits out dd-core)"}


def requirement_names(requirements):
    names = {re.split(r"[<>=\[;! ]", r)[0].strip().lower() for r in requirements}
    return names - {"probhook"}


def imported_modules():
    found = set()
    for path in (ROOT / "probhook").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "probhook"}


def test_license_file_is_the_apache_license_the_metadata_names():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_metadata_names_authors_classifiers_and_where_the_project_lives():
    assert PROJECT["authors"]
    classifiers = PROJECT["classifiers"]
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Programming Language :: Python :: 3.10" in classifiers
    urls = PROJECT["urls"]
    assert urls["Source"] == urls["Homepage"] == URL
    assert urls["Issues"] == f"{URL}/issues"
    assert urls["Changelog"].startswith(URL)
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {PROJECT['version']}" in changelog


def test_every_imported_module_is_declared_and_every_declared_package_used():
    declared = requirement_names(PROJECT["dependencies"])
    for requirements in PROJECT["optional-dependencies"].values():
        declared |= requirement_names(requirements)
    declared_imports = {IMPORT_NAME.get(n, n.replace("-", "_")) for n in declared}
    imported = imported_modules()
    assert imported - declared_imports - set(COMES_WITH) == set()  # tqdm, PIL: declared
    extras_for_tools = requirement_names(
        PROJECT["optional-dependencies"]["test"] + PROJECT["optional-dependencies"]["docs"]
    )
    unused = {n for n in declared - extras_for_tools if IMPORT_NAME.get(n, n) not in imported}
    assert unused - set(WHY_DECLARED) == set()  # ipython was declared and never imported


def test_constraints_say_which_torch_build_they_pin():
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert "IS the CUDA build" in text
    assert "avoid" not in text.lower()
