"""Accuracy without labels (CBPE): the interval covers the true accuracy on calibrated data, also
after a shift; calibration on a labelled reference; groups; per-class scores; NaN rows; every
source (arrays, heads, captures, files read in chunks)."""

import numpy as np
import pytest
import torch

import probhook
from probhook import capture_probs, scan
from probhook.calibrators import Isotonic, Temperature, fit_calibrator, isotonic_fit
from probhook.estimate import estimate_accuracy, expected_accuracy

LABELS = ["letter", "invoice", "form", "memo"]


def calibrated(rng, n, scale=2.0, shift=0.0, C=4):
    """Probabilities and labels drawn from them (calibrated by construction)."""
    z = rng.normal(size=(n, C)) * scale
    z[:, 1] += shift
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.minimum((p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), C - 1)
    return p, y


def head_of(probs, columns=None):
    model = torch.nn.Identity()
    cap = capture_probs(model, labels=LABELS, activation="none", capacity=len(probs))
    with cap:
        meta = columns or {}
        for i, row in enumerate(probs):
            with cap.key(f"row{i}", **{k: v[i] for k, v in meta.items()}):
                model(torch.as_tensor(row[None], dtype=torch.float32))
    return cap


def test_interval_covers_the_true_accuracy_in_at_least_90_percent_of_200_seeds():
    hits = {"reference": 0, "shifted current": 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        for name, (p, y) in {
            "reference": calibrated(rng, 2000, scale=2.0),
            "shifted current": calibrated(rng, 1500, scale=1.2, shift=1.0),  # less sure, more
        }.items():  # invoices: another accuracy
            est = expected_accuracy(p)
            true = float((p.argmax(axis=1) == y).mean())
            hits[name] += est.lower <= true <= est.upper
    assert hits["reference"] / 200 >= 0.90, hits
    assert hits["shifted current"] / 200 >= 0.90, hits


def test_calibrating_on_a_labelled_reference_fixes_an_overconfident_model():
    covered, errors = {"none": 0, "temperature": 0, "isotonic": 0}, {}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(6000, 4)) * 1.5
        true_p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = np.minimum((true_p.cumsum(axis=1) < rng.random((6000, 1))).sum(axis=1), 3)
        shown = np.exp(2.5 * z) / np.exp(2.5 * z).sum(axis=1, keepdims=True)  # over-confident
        ref, cur = slice(0, 4000), slice(4000, None)
        true = float((shown[cur].argmax(axis=1) == y[cur]).mean())
        for method in covered:
            cal = None if method == "none" else fit_calibrator(shown[ref], y[ref], method)
            est = expected_accuracy(shown[cur], calibrator=cal)
            covered[method] += est.lower <= true <= est.upper
            errors.setdefault(method, []).append(abs(est.accuracy - true))
    assert covered["none"] <= 2  # the raw estimate is far off: about 0.15 too high
    assert np.mean(errors["none"]) > 0.1
    assert covered["temperature"] >= 34, covered
    assert covered["isotonic"] >= 32, covered
    assert np.mean(errors["temperature"]) < 0.015
    assert np.mean(errors["isotonic"]) < 0.02


def test_head_view_estimate_accuracy_calibrates_on_a_labelled_reference_head():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(800, 4)) * 1.5
    true_p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.minimum((true_p.cumsum(axis=1) < rng.random((800, 1))).sum(axis=1), 3)
    p = np.exp(3 * z) / np.exp(3 * z).sum(axis=1, keepdims=True)  # over-confident
    reference, current = head_of(p[:500]), head_of(p[500:])
    raw = current.heads["model"].estimate_accuracy()
    fixed = current.heads["model"].estimate_accuracy(calibrate_on=(reference, y[:500]))
    names = [LABELS[i] for i in y[:500]]  # a capture with one head is a source too
    iso = estimate_accuracy(current, (reference, names), method="isotonic")
    true = float((p[500:].argmax(axis=1) == y[500:]).mean())
    assert raw.accuracy - true > 0.1
    assert abs(fixed.accuracy - true) < 0.06
    assert fixed.calibration == "temperature"
    assert abs(iso.accuracy - true) < 0.06
    assert iso.calibration == "isotonic"
    view = current.heads["model"]
    with pytest.raises(ValueError, match=r"targets name classes .* \['spam'\]"):
        view.estimate_accuracy((reference, ["spam"] * 500))
    with pytest.raises(ValueError, match=r"has 500 rows but \(3,\) targets"):
        view.estimate_accuracy((reference, [0, 1, 2]))
    with pytest.raises(TypeError, match="fitted calibration map"):
        view.estimate_accuracy(calibrate_on="reference.parquet")


def test_the_reference_must_have_the_same_labels():
    rng = np.random.default_rng(0)
    p, y = calibrated(rng, 300)
    with pytest.raises(ValueError, match=r"calibration reference has labels .* only in"):
        estimate_accuracy(head_of(p), calibrate_on=(p[:, :3] / p[:, :3].sum(1, keepdims=True), y))


def test_per_class_precision_recall_f1_come_from_the_expected_confusion_matrix():
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    est = expected_accuracy(p, labels=["a", "b", "c"])
    confusion = np.zeros((3, 3))  # [true, predicted]: each row adds its probabilities
    for row in p:
        confusion[:, row.argmax()] += row
    tp = np.diag(confusion)
    precision, recall = tp / confusion.sum(axis=0), tp / confusion.sum(axis=1)
    f1 = 2 * precision * recall / (precision + recall)
    got = est.per_class
    assert [c.predicted for c in got] == [2, 1, 1]
    np.testing.assert_allclose([c.precision for c in got], precision)
    np.testing.assert_allclose([c.recall for c in got], recall)
    np.testing.assert_allclose([c.f1 for c in got], f1)
    np.testing.assert_allclose([c.support for c in got], p.sum(axis=0))
    assert est.accuracy == pytest.approx(p.max(axis=1).mean())
    var = (p.max(axis=1) * (1 - p.max(axis=1))).sum()
    assert est.std == pytest.approx(np.sqrt(var) / 4)
    assert est.upper - est.accuracy == pytest.approx(min(1.96 * est.std, 1 - est.accuracy), 1e-3)
    assert list(est.classes_to_pandas()["label"]) == ["a", "b", "c"]


def test_groups_by_a_column_or_by_values_match_each_group_alone():
    rng = np.random.default_rng(1)
    p, _ = calibrated(rng, 90)
    files = np.array([f"doc{i % 3}.pdf" for i in range(90)], dtype=object)
    cap = head_of(p, {"file_name": files})
    view = cap.heads["model"]
    by_column = view.estimate_accuracy(by="file_name")
    by_values = view.estimate_accuracy(by=np.arange(90) % 3)
    assert sorted(by_column.groups) == ["doc0.pdf", "doc1.pdf", "doc2.pdf"]
    for g in range(3):
        alone = expected_accuracy(p[np.arange(90) % 3 == g])
        for est in (by_column.groups[f"doc{g}.pdf"], by_values.groups[g]):
            assert est.n == 30
            assert est.accuracy == pytest.approx(alone.accuracy)
            assert est.upper == pytest.approx(alone.upper)
    assert by_column.accuracy == pytest.approx(expected_accuracy(p).accuracy)
    frame = by_column.to_pandas()
    assert list(frame["group"]) == ["(all)", "doc0.pdf", "doc1.pdf", "doc2.pdf"]
    with pytest.raises(KeyError, match=r"no column 'day'; its columns: \['key', 'head'"):
        view.estimate_accuracy(by="day")
    with pytest.raises(ValueError, match="by= has 5 values for 90 rows"):
        view.estimate_accuracy(by=np.arange(5))


def test_nan_rows_are_excluded_and_counted_per_group():
    p = np.array([[0.9, 0.1], [np.nan, np.nan], [0.3, 0.7], [np.inf, 0.0]])
    est = expected_accuracy(p, groups=["a", "a", "b", "c"])
    assert (est.n, est.excluded) == (2, 2)
    assert est.accuracy == pytest.approx(0.8)
    assert (est.groups["a"].n, est.groups["a"].excluded) == (1, 1)
    assert est.groups["c"].n == 0
    assert est.groups["c"].excluded == 1
    assert "2 non-finite rows excluded" in str(est)
    with pytest.raises(ValueError, match=r"no rows to estimate .* \(2 rows with NaN or inf"):
        estimate_accuracy(np.full((2, 3), np.nan))


def test_files_are_read_in_chunks_with_the_same_result(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    p, _ = calibrated(rng, 1000)
    files = np.array([f"d{i % 7}" for i in range(1000)], object)
    files[::50] = None  # rows without a file: the group None
    cap = head_of(p, {"file_name": files})
    path = cap.to_parquet(tmp_path / "run.parquet")
    monkeypatch.setattr(scan, "CHUNK_ROWS", 128)  # eight chunks
    assert len(list(scan.open_rows(path).chunks())) == 8
    whole = cap.heads["model"].estimate_accuracy(by="file_name")
    for source in (path, probhook.load(path)):
        est = estimate_accuracy(source, by="file_name")
        assert est.n == 1000
        assert est.accuracy == pytest.approx(whole.accuracy, abs=1e-6)  # float32 rows, summed
        assert est.groups["d3"].upper == pytest.approx(whole.groups["d3"].upper, abs=1e-6)
        assert set(est.groups) == {None, *(f"d{i}" for i in range(7))}
        assert est.groups[None].n == whole.groups[None].n == 20


def test_isotonic_fit_is_the_pool_adjacent_violators_least_squares_fit():
    rng = np.random.default_rng(4)
    x, y = rng.random(60), (rng.random(60) < 0.6).astype(float)
    xs, ys = isotonic_fit(x, y)
    assert np.all(np.diff(ys) >= 0)
    assert np.all(np.diff(xs) > 0)
    fitted = np.interp(x, xs, ys)
    # no other non-decreasing fit is closer: moving any block towards its neighbours is worse
    for eps in (0.01, -0.01):
        for i in range(len(ys)):
            other = ys.copy()
            other[i] += eps
            if np.all(np.diff(other) >= 0):
                assert ((np.interp(x, xs, other) - y) ** 2).sum() >= ((fitted - y) ** 2).sum()
    iso = Isotonic(xs, ys)
    q = iso.apply(rng.dirichlet([1, 1, 1], size=20))
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    assert Temperature(2.0).apply(np.array([[np.nan, 0.5]])).tolist()[0][1] == 0.5
