"""The command line's rows file: one run writes a path at a time, and a killed run's rows are
never overwritten by the next run nor read as a finished one."""

import shutil
import signal
import subprocess
import sys
import threading

import pytest

import probhook
from probhook.demo import SAMPLES_DIR


def _run(tmp_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "probhook", "run", str(tmp_path / "in"), "--out",
         str(tmp_path / "rows.parquet"), "--format", "json", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip


def test_a_second_run_on_the_same_path_and_a_rerun_after_a_kill_are_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(10):
        for sample in sorted(SAMPLES_DIR.glob("*.pdf")):
            shutil.copy(sample, folder / f"{k:02d}_{sample.name}")
    first = _run(tmp_path)
    watchdog = threading.Timer(240, first.kill)  # a hung child fails the test, never the suite
    watchdog.start()
    try:
        assert first.stdout.readline(), first.communicate()[1]  # it writes its rows file now
        second = _run(tmp_path)
        out, err = second.communicate(timeout=200)
        assert second.returncode == 2, err
        assert "probhook: error:" in err
        assert "rows.parquet is being written by another capture or probhook run" in err
        assert "Traceback" not in err
        assert out == ""
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        watchdog.cancel()
    rerun = _run(tmp_path)
    _, err = rerun.communicate(timeout=200)
    assert rerun.returncode == 2, err
    assert "rows.parquet.partial.arrows holds the rows of an earlier run" in err
    assert "Traceback" not in err
    with pytest.warns(RuntimeWarning, match="never finished.*killed"):
        assert len(probhook.load(tmp_path / "rows.parquet")) >= 1
