"""The report page in a real browser: headless Chromium (Debian's ``chromium``; ``.ci/run`` installs
it) renders it; its charts are drawn (their colours fill regions of the screenshot) and the
console stays silent. A control page shows that both checks can fail."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from probhook import capture_probs
from probhook.cli import main
from probhook.svg import REFERENCE_COLOR, RUN_COLOR, THRESHOLD_COLOR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LABELS = ["letter", "invoice", "form", "memo"]


def rgb(colour):
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def render(page, tmp_path, height=2600):
    """A screenshot of ``page`` as an RGB array, and the console lines Chromium logged."""
    if CHROMIUM is None:
        pytest.fail("the browser test needs Chromium: apt-get install -y chromium (.ci/run does)")
    shot = tmp_path / f"{page.stem}.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", f"--window-size=1440,{height}", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert shot.exists(), done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return np.asarray(Image.open(shot).convert("RGB")), console


def pixels_of(image, colour):
    return int((image == np.array(rgb(colour), np.uint8)).all(axis=2).sum())


def rows_of(image, colour):
    """Screenshot rows where ``colour`` is drawn: where a chart is on the page."""
    return np.flatnonzero((image == np.array(rgb(colour), np.uint8)).all(axis=2).any(axis=1))


def test_the_checks_catch_console_errors_and_missing_charts(tmp_path):
    page = tmp_path / "control.html"
    page.write_text(
        f'<html><body><svg width="300" height="100"><rect width="200" height="60" '
        f'fill="{RUN_COLOR}"/></svg><script>console.error("broken chart")</script></body></html>'
    )
    image, console = render(page, tmp_path, height=400)
    assert pixels_of(image, RUN_COLOR) == 200 * 60
    assert any("broken chart" in line for line in console)
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body><p>no chart</p></body></html>")
    image, console = render(blank, tmp_path, height=400)
    assert pixels_of(image, RUN_COLOR) == 0
    assert console == []


def run_file(path, probs):
    model = torch.nn.Identity()
    cap = capture_probs(model, labels=LABELS, activation="none", capacity=len(probs))
    with cap, cap.keys_for([f"{path.stem}-{i}" for i in range(len(probs))]):
        model(torch.as_tensor(probs, dtype=torch.float32))
    cap.to_parquet(path)
    return cap


def test_the_report_opens_in_chromium_with_its_charts_drawn(tmp_path):
    rng = np.random.default_rng(0)

    def probs(n, scale, shift=0.0):
        z = rng.normal(size=(n, 4)) * scale
        z[:, 1] += shift
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    current, reference = probs(3000, 3.0, 0.8), probs(3000, 3.5)
    cap = run_file(tmp_path / "run.parquet", current)
    run_file(tmp_path / "reference.parquet", reference)
    truth = np.minimum((current.cumsum(1) < rng.random((3000, 1))).sum(1), 3)
    lines = ["key,label"] + [f"{k},{LABELS[t]}" for k, t in zip(cap.keys, truth, strict=True)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.html"
    run, ref, labels = (
        str(tmp_path / n) for n in ("run.parquet", "reference.parquet", "labels.csv")
    )
    argv = [
        "report",
        run,
        "--reference",
        ref,
        "--labels",
        labels,
        "--max-error",
        "0.05",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    image, console = render(out, tmp_path)
    assert console == []  # no error, no message at all
    assert image.shape == (2600, 1440, 3)
    assert pixels_of(image, RUN_COLOR) > 15_000  # bars of this run: shares, histogram, legend
    assert pixels_of(image, REFERENCE_COLOR) > 2_000  # the reference: bars and outline
    assert pixels_of(image, THRESHOLD_COLOR) > 100  # the review threshold in the histogram
    charts = rows_of(image, RUN_COLOR)
    top, bottom = charts.min(), charts.max()
    band = image[top : bottom + 1]
    assert (band < 250).any(axis=2).mean() > 0.05  # a drawn region, not a blank band
    assert len(rows_of(image, REFERENCE_COLOR)) > 50
