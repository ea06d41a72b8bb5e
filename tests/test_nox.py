"""nox, as the README runs it: every session on the Python that runs nox, and an interpreter
that is not there fails the run (a skipped session would read as a pass in CI)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("nox")


def nox(*args, envdir):
    return subprocess.run(
        [sys.executable, "-m", "nox", "--envdir", str(envdir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_sessions_run_on_the_python_that_runs_nox(tmp_path):
    listed = nox("--list", "--json", envdir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    sessions = json.loads(listed.stdout)
    assert {s["name"] for s in sessions} >= {"tests", "lint", "typecheck"}
    assert [s["name"] for s in sessions if s["python"] is not None] == []


def test_a_missing_interpreter_fails_the_run(tmp_path):
    done = nox("-s", "lint", "--force-python", "3.99", envdir=tmp_path)
    assert done.returncode != 0
    assert "interpreter 3.99 not found" in done.stderr
    assert "skipped" not in done.stderr.lower()


def test_ci_times_every_stage():
    """``.ci/run`` (on a 2-core machine, about 24 minutes; it must stay under 45) prints the time
    of each stage: every command runs through its ``stage`` function."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in lines if "nox" in line and not line.lstrip().startswith("#")]
    assert commands
    for i, line in enumerate(lines):
        if line in commands and not line.startswith("stage "):  # the README's line, verbatim,
            assert lines[i - 1] == "began=$SECONDS", line  # timed by the lines around it
            assert lines[i + 1].startswith('echo "=== '), line
            assert "began" in lines[i + 1], line
    assert 'echo "=== $name: $((SECONDS - began)) s' in "\n".join(lines)
