"""``probhook run --format json | head -1``: the reader leaving stdout ends the run as SIGPIPE
does, with the rows file complete; no document is reported unreadable for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import probhook
from probhook import demo


def test_a_reader_leaving_stdout_ends_the_run_cleanly(tmp_path):
    samples = sorted(Path(demo.SAMPLES_DIR).glob("*.pdf"))
    out = tmp_path / "rows.parquet"
    root = str(Path(probhook.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["DEEPDOCTECTION_CACHE"] = str(tmp_path / "dd")
    command = [sys.executable, "-m", "probhook", "run", *map(str, samples), "--format", "json"]
    proc = subprocess.Popen(
        [*command, "--out", str(out), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + 13, err
    assert '"predicted"' in first
    assert "unreadable" not in err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert "interrupted by SIGPIPE" in err
    assert 1 <= len(probhook.load(out)) < len(samples)
