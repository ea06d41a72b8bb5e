"""Optional packages: the extras named in errors exist in pyproject.toml and bring those modules;
bad sink targets fail when the capture is created."""

import re
import sys
from pathlib import Path

import pytest
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

from probhook import _extras, capture_probs
from probhook._extras import MissingExtraError, require, require_extra

PYPROJECT = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
)
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
IMPORT_NAME = {"pillow": "PIL"}  # distributions whose import name differs


def test_every_extra_module_comes_with_that_extra():
    for extra, modules in _extras.EXTRAS.items():
        names = {re.split(r"[<>=\[;]", req)[0].strip().lower() for req in EXTRAS[extra]}
        imports = {IMPORT_NAME.get(n, n.replace("-", "_")) for n in names}
        assert set(modules) <= imports, extra
    all_extras = EXTRAS["all"][0]
    assert all(extra in all_extras for extra in _extras.EXTRAS)


def test_a_missing_module_names_the_extra():
    message = r'plots needs not_there_xyz, which is not installed: pip install "probhook\[notebook'
    with pytest.raises(MissingExtraError, match=message) as info:
        require("not_there_xyz", "notebook", "plots")
    assert isinstance(info.value, ModuleNotFoundError)
    assert info.value.name == "not_there_xyz"
    assert require("numpy", "pandas", "x").__name__ == "numpy"
    require_extra("deepdoctection", "probhook run")  # installed here: no error


def test_require_extra_finds_a_missing_module_without_importing(monkeypatch):
    monkeypatch.setitem(_extras.EXTRAS, "notebook", ("matplotlib", "not_there_xyz"))
    with pytest.raises(
        MissingExtraError, match=r'--plot needs not_there_xyz.*"probhook\[notebook\]"'
    ):
        require_extra("notebook", "--plot")


def test_a_bad_sink_target_fails_at_creation(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"must end in .parquet or .arrows"):
        capture_probs(model, sink=tmp_path / "rows.csv")
    with pytest.raises(TypeError, match=r"object with write\(rows\) and close\(\)"):
        capture_probs(model, sink=object())
    assert not (tmp_path / "rows.csv").exists()
    capture_probs(model, sink=tmp_path / "rows.parquet")  # pyarrow is installed here
