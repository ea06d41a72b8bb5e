"""Each extra, installed into a fresh venv as a user would (``pip install ".[extra]"``): the
README's commands for that extra run, and what needs a missing extra says which one to install.

Slow (each install takes minutes; torch comes from pip's cache): selected with ``pytest -m extras``,
run by ``nox -s extras``.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.extras

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": "",  # only what the venv installed
}

# what each missing extra breaks, as (python code, the extra its error must name)
NEEDS_PANDAS = ("cap.to_pandas()", "pandas")
NEEDS_PARQUET = ("cap.to_parquet('rows.parquet')", "parquet")
NEEDS_PARQUET_LOAD = ("probhook.load('rows.parquet')", "parquet")
NEEDS_PARQUET_SINK = ("probhook.capture_probs(model, sink='rows.parquet')", "parquet")
NEEDS_NOTEBOOK = ("cap.plot.confidence()", "notebook")
NEEDS_TESTING = ("import probhook.testing", "deepdoctection")

SETUP = """
import torch, probhook
model = torch.nn.Linear(4, 3)
with probhook.capture_probs(model, labels=["letter", "form", "invoice"]) as cap:
    model(torch.randn(5, 4))
"""


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"

    def install(self, extra: str) -> None:
        target = f"{ROOT}[{extra}]" if extra else str(ROOT)
        # --no-compile: byte-compiling torch's thousands of files is a large share of the install
        pip = (self.bin / "pip", "install", "-q", "--no-compile", "-c", ROOT / "constraints.txt")
        self.run(*pip, target)

    def run(self, *args, cwd=None, check=True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [os.fspath(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True
        )
        if check:
            assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr[-3000:]}"
        return done

    def python(self, code: str, cwd: Path, check=True) -> subprocess.CompletedProcess:
        return self.run(self.bin / "python", "-c", textwrap.dedent(code), cwd=cwd, check=check)

    def assert_names_extra(self, code: str, extra: str, cwd: Path) -> None:
        done = self.python(SETUP + code, cwd, check=False)
        assert done.returncode != 0, f"{code} worked without probhook[{extra}]"
        assert f'pip install "probhook[{extra}]"' in done.stderr, done.stderr[-2000:]
        assert "MissingExtraError" in done.stderr, done.stderr[-2000:]


@pytest.fixture
def venv(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True)
    yield Venv(tmp_path / "venv")
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)  # a venv with torch is GBs


def test_core_install_runs_plain_torch_and_names_every_missing_extra(venv, tmp_path):
    venv.install("")
    plain = next(b for b in PYTHON_BLOCKS if "torch.nn.Linear" in b)
    venv.python(plain, tmp_path)
    for code, extra in (NEEDS_PANDAS, NEEDS_PARQUET, NEEDS_PARQUET_LOAD, NEEDS_PARQUET_SINK,
                        NEEDS_NOTEBOOK, NEEDS_TESTING):  # fmt: skip
        venv.assert_names_extra(code, extra, tmp_path)
    demo = venv.run(venv.bin / "probhook", "demo", cwd=tmp_path, check=False)
    assert demo.returncode != 0
    assert 'pip install "probhook[deepdoctection]"' in demo.stderr, demo.stderr[-2000:]


def test_deepdoctection_install_runs_the_demo_and_names_the_plot_extra(venv, tmp_path):
    venv.install("deepdoctection")
    demo = venv.run(venv.bin / "probhook", "demo", "--out", "rows.parquet", cwd=tmp_path)
    assert "pages classified" in demo.stdout
    assert (tmp_path / "rows.parquet").stat().st_size > 0
    usage = next(b for b in PYTHON_BLOCKS if "make_pipe" in b)
    venv.python(usage, tmp_path)
    venv.python(SETUP + "cap.to_parquet('rows.parquet'); probhook.load('rows.parquet')", tmp_path)
    for code, extra in (NEEDS_PANDAS, NEEDS_NOTEBOOK):
        venv.assert_names_extra(code, extra, tmp_path)
    plot = venv.run(venv.bin / "probhook", "demo", "--plot", "c.png", cwd=tmp_path, check=False)
    assert plot.returncode != 0
    assert 'pip install "probhook[notebook]"' in plot.stderr, plot.stderr[-2000:]


def system_path() -> str:
    """``PATH`` without virtual environments: ``python3`` is the machine's own (Debian's)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not (Path(d).parent / "pyvenv.cfg").exists())


def readme_command(words: str) -> str:
    """The README's one-line shell command that contains ``words``."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    return next(b.strip().splitlines()[-1] for b in blocks if words in b)


def test_readme_command_1_on_the_system_python_then_every_readme_command(tmp_path):
    """README command 1, as written, in a copy of the repository, with the machine's own
    ``python3`` (on Debian, one that refuses ``pip install`` outside a venv)."""
    clone = tmp_path / "probhook"
    skip = shutil.ignore_patterns(".git", ".venv", ".nox", "site", "__pycache__", "*.egg-info",
                                  ".mypy_cache", ".ruff_cache", "results")  # fmt: skip
    shutil.copytree(ROOT, clone, ignore=skip)
    command = readme_command("probhook demo")
    assert command.startswith("python3 -m venv .venv && ")
    env = {**ENV, "PATH": system_path()}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pages classified" in done.stdout
    venv = Venv(clone / ".venv")
    try:
        every_readme_command(venv, tmp_path)
    finally:
        shutil.rmtree(clone / ".venv", ignore_errors=True)  # a venv with torch is GBs


def every_readme_command(venv, tmp_path):
    demo = venv.run(
        venv.bin / "probhook", "demo", "--out", "rows.parquet", "--plot", "c.png", cwd=tmp_path
    )
    assert "pages classified" in demo.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    for block in PYTHON_BLOCKS:
        venv.python(block, tmp_path)
    venv.run(venv.bin / "python", ROOT / "examples" / "quickstart.py", cwd=tmp_path)
    venv.python(
        SETUP + "cap.plot.confidence(); df = cap.to_pandas(); assert len(df) == 5", tmp_path
    )
