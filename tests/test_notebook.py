import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes

from probhook import capture_probs, plots

LABELS = ["letter", "form", "invoice", "memo"]


@pytest.fixture
def cap():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    with capture_probs(model, labels=LABELS) as cap, cap.keys_for([f"page-{i}" for i in range(30)]):
        model(torch.randn(30, 6) * 3)
    return cap


def test_capture_html_shows_heads_counts_and_top3(cap):
    html = cap._repr_html_()
    assert "30 rows kept of capacity 10000" in html
    assert "0 evicted" in html
    assert "MiB" in html
    assert "letter, form, invoice, memo" in html
    last = cap.get("page-29")
    for label, p in last.top_k(3):
        assert f"{label}</span>" in html
        assert f"{p:.1%}" in html
    assert html.count("<tr>") == 11  # header + the latest 10 rows
    assert repr(cap).startswith("<Capture stopped, model: 30 rows")


def test_distribution_html_and_repr(cap):
    dist = cap.get("page-3")
    html = dist._repr_html_()
    assert "page-3" in html
    assert all(label in html for label in LABELS)
    assert f"{dist.confidence:.1%}" in html
    assert repr(dist).startswith(f"Distribution({dist.predicted}=")


def test_every_plot_returns_axes_with_expected_bars(cap):
    ax = cap.plot.confidence(bins=12)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 12
    assert ax.get_xlabel() == "top probability"
    assert "30 predictions" in ax.get_title()
    assert len(cap.plot.uncertainty(bins=8).patches) == 8
    assert len(cap.plot.uncertainty(measure="entropy", bins=5).patches) == 5
    assert [t.get_text() for t in cap.plot.class_means().get_xticklabels()] == LABELS
    page = cap.plot.page("page-0")
    assert len(page.patches) == 4
    assert page.get_title().startswith("page-0: ")
    targets = cap.probs.argmax(1)
    rel = cap.plot.reliability(targets, n_bins=10)
    table = __import__("probhook").calibration.reliability_table(cap.probs, targets, 10)
    assert len(rel.patches) == int((table.count > 0).sum())
    assert "ECE" in rel.get_title()
    with pytest.raises(ValueError, match="margin' or 'entropy"):
        plots.uncertainty_histogram(cap, measure="variance")
    with pytest.raises(KeyError, match="no row captured"):
        cap.plot.page("missing")
    rel_names = cap.plot.reliability([LABELS[i] for i in targets], n_bins=10)
    assert len(rel_names.patches) == len(rel.patches)


def test_plots_take_plain_arrays():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert len(plots.confidence_histogram(probs, bins=4).patches) == 4
    assert len(plots.class_means(probs).patches) == 2
