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


def _save(ax, path):
    ax.figure.savefig(path, dpi=80)
    __import__("matplotlib.pyplot").pyplot.close(ax.figure)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_every_plot_function_draws_and_saves_a_png(cap, tmp_path):
    truth = [LABELS[(i * 7) % 4] if i % 3 else cap.get(f"page-{i}").predicted for i in range(30)]
    calls = {
        "confidence_histogram": lambda: plots.confidence_histogram(cap, threshold=0.8),
        "uncertainty_histogram": lambda: plots.uncertainty_histogram(cap, threshold=0.2),
        "class_means": lambda: plots.class_means(cap),
        "distribution_bar": lambda: plots.distribution_bar(cap.get("page-1")),
        "reliability_diagram": lambda: plots.reliability_diagram(cap, truth, n_bins=10),
        "confusion_matrix": lambda: plots.confusion_matrix(cap, truth),
        "risk_coverage": lambda: plots.risk_coverage(cap, truth),
    }
    assert set(calls) == set(plots.__all__) - {"Plotter"}
    for name, call in calls.items():
        _save(call(), tmp_path / f"{name}.png")
    methods = [m for m in vars(plots.Plotter) if not m.startswith("_")]
    bound = {
        "confidence": lambda: cap.plot.confidence(threshold=0.9),
        "uncertainty": lambda: cap.plot.uncertainty(measure="entropy", threshold=0.5),
        "reliability": lambda: cap.plot.reliability(truth),
        "confusion": lambda: cap.plot.confusion(truth, normalize=True),
        "risk_coverage": lambda: cap.plot.risk_coverage(truth),
        "class_means": lambda: cap.plot.class_means(),
        "page": lambda: cap.plot.page("page-2"),
    }
    assert set(bound) == set(methods)
    for name, call in bound.items():
        _save(call(), tmp_path / f"plot.{name}.png")


def test_threshold_lines_count_flagged_rows_and_legends_sit_outside(cap):
    ax = cap.plot.confidence(threshold=0.8)
    below = int((cap.confidence() < 0.8).sum())
    [line] = ax.lines
    assert line.get_xdata()[0] == 0.8
    assert f"{below} rows below" in ax.get_legend().get_texts()[1].get_text()
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the plot area: covers no bar
    ent = cap.plot.uncertainty(measure="entropy", threshold=0.5)
    above = int((cap.entropy(normalized=True) > 0.5).sum())
    assert f"{above} rows above" in ent.get_legend().get_texts()[1].get_text()
    assert cap.plot.confidence().get_legend() is None  # no threshold, no legend


def test_truth_plots_show_counts(cap):
    truth = [LABELS[i % 4] for i in range(30)]
    targets = cap.target_indices(truth)
    ax = cap.plot.confusion(truth)
    counts = __import__("probhook").calibration.confusion_matrix(cap.probs, targets)
    assert [int(t.get_text()) for t in ax.texts] == counts.ravel().tolist()
    assert [t.get_text() for t in ax.get_xticklabels()] == LABELS
    rel = cap.plot.reliability(truth, n_bins=5)
    table = __import__("probhook").calibration.reliability_table(cap.probs, targets, 5)
    assert [t.get_text() for t in rel.texts] == [str(c) for c in table.count if c]
    rc = cap.plot.risk_coverage(truth)
    x, y = rc.lines[0].get_data()
    assert x[-1] == 1.0
    assert y[-1] == (cap.probs.argmax(1) == targets).mean()
    assert y[0] in (0.0, 1.0)  # the single most confident row is right or wrong
    with pytest.raises(TypeError, match="must be class indices"):
        plots.confusion_matrix(cap.probs, truth)


def test_deepdoctection_rows_are_named_by_file_and_page(tmp_path):
    from probhook import demo
    from probhook.integrations.deepdoctection.adapter import _short
    from probhook.integrations.deepdoctection.analyzer import build_analyzer, read_model_dir

    wrapper, labels = read_model_dir(demo.MODEL_DIR)
    analyzer = build_analyzer(demo.MODEL_DIR, wrapper, labels, ocr=False)
    with capture_probs(analyzer) as cap:
        flow = analyzer.analyze(path=str(demo.SAMPLES_DIR / "letter_and_invoice.pdf"))
        flow.reset_state()
        pages = list(flow)
    assert list(cap.heads) == ["LayoutLM letter/invoice/form/memo"]  # not its weights' folders
    second = cap.get(pages[1])
    assert second.where == "letter_and_invoice.pdf p.2"
    assert repr(second).endswith("at 'letter_and_invoice.pdf p.2')")
    html = cap._repr_html_()
    assert "2 rows, mean confidence" in html
    assert "letter_and_invoice.pdf p.1" in html
    assert pages[0].image_id not in html
    assert cap.plot.page(pages[1]).get_title().startswith("letter_and_invoice.pdf p.2: ")
    long_name = _short("lm_sequence_class_Transformers_LayoutLM_tmp_tmpfryirdqe", tuple("abcdef"))
    assert long_name == "LayoutLM a/b/c/d/+2"
