"""``probhook run`` when the rows file cannot be written (a full disk, simulated with a file-size
limit): one error line naming the file, exit status 1, the rows written before readable; no
traceback, and no page shown as not classified because its row could not be stored."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import probhook
from probhook import demo

CHILD = textwrap.dedent(
    """
    import resource, runpy, signal, sys
    import deepdoctection  # copies its config files into its cache first: they are no rows
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
    sys.argv = ["probhook", *sys.argv[2:]]
    runpy.run_module("probhook", run_name="__main__")
    """
)


def test_a_rows_file_that_cannot_be_written_ends_the_run_with_one_error_line(tmp_path):
    out = tmp_path / "rows.arrows"
    root = str(Path(probhook.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = ["run", str(demo.SAMPLES_DIR), "--out", str(out), "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "3500", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"probhook: error: writing {out} failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not classified" not in proc.stdout
    shown = [line for line in proc.stdout.splitlines() if ".pdf" in line]
    assert 1 <= len(probhook.load(out)) == len(shown) < 12
