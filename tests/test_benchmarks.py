"""Every benchmark has a ``--quick`` mode (the bench session runs them all with it)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_cli_quick_is_two_copies_of_the_samples_and_one_round():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cli.py"), "--quick", "--rounds", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "24 documents, 26 pages" in done.stdout
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cli.py"), "--help"],
        capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    assert "--quick" in help_text
