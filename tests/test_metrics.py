import numpy as np
import pytest
import scipy.stats
import torch
from torchmetrics.classification import MulticlassCalibrationError

from probhook import calibration, metrics
from probhook.calibration import conformal_threshold, fit_temperature, prediction_sets


def random_probs(n, c, seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(c, 0.5), size=n)
    targets = np.array([rng.choice(c, p=row) for row in probs])
    return probs, targets


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [5, 15])
def test_ece_mce_equal_torchmetrics(seed, n_bins):
    probs, targets = random_probs(2000, 6, seed)
    for norm in ("l1", "max"):
        tm = MulticlassCalibrationError(num_classes=6, n_bins=n_bins, norm=norm)
        expected = float(tm(torch.tensor(probs), torch.tensor(targets)))
        assert calibration.calibration_error(probs, targets, n_bins, norm) == pytest.approx(
            expected, abs=1e-6
        )


def test_entropy_equals_scipy_and_confidence_measures():
    probs, _ = random_probs(100, 5, 1)
    np.testing.assert_allclose(
        metrics.entropy(probs), scipy.stats.entropy(probs, axis=1), atol=1e-12
    )
    np.testing.assert_allclose(
        metrics.entropy(probs, normalized=True), scipy.stats.entropy(probs, axis=1) / np.log(5)
    )
    s = np.sort(probs, axis=1)
    np.testing.assert_allclose(metrics.margin(probs), s[:, -1] - s[:, -2])
    np.testing.assert_allclose(metrics.max_prob(probs), s[:, -1])
    idx, top = metrics.top_k(probs, 2)
    np.testing.assert_allclose(top, s[:, ::-1][:, :2])
    assert (np.take_along_axis(probs, idx, 1) == top).all()


def test_streaming_equals_batch_and_merges():
    probs, targets = random_probs(3000, 4, 2)
    whole = calibration.CalibrationState(15)
    whole.update(probs, targets)
    parts = [calibration.CalibrationState(15) for _ in range(3)]
    for state, chunk in zip(parts, np.array_split(np.arange(3000), 3), strict=False):
        for sub in np.array_split(chunk, 7):
            state.update(probs[sub], targets[sub])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    batch = {
        "accuracy": calibration.accuracy(probs, targets),
        "nll": calibration.nll(probs, targets),
        "brier": calibration.brier_score(probs, targets),
        "ece": calibration.calibration_error(probs, targets),
        "mce": calibration.calibration_error(probs, targets, norm="max"),
    }
    for state in (whole, merged):
        result = state.compute()
        for name, value in batch.items():
            assert result[name] == pytest.approx(value, abs=1e-9)
    table = whole.reliability()
    assert table.count.sum() == 3000
    assert len(table.count) == 15
    assert whole.count.nbytes + whole.conf_sum.nbytes + whole.acc_sum.nbytes == 3 * 15 * 8


def test_adaptive_ece_uses_equal_mass_bins():
    probs, targets = random_probs(1500, 3, 3)
    conf = probs.max(1)
    correct = probs.argmax(1) == targets
    order = np.argsort(conf, kind="stable")
    expected = (
        sum(len(c) * abs(correct[c].mean() - conf[c].mean()) for c in np.array_split(order, 10))
        / 1500
    )
    assert calibration.adaptive_calibration_error(probs, targets, 10) == pytest.approx(expected)


def test_flag_rules():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33], [np.nan, 0.5, 0.5]])
    assert metrics.flag(probs, min_confidence=0.6).tolist() == [False, True, True, True]
    assert metrics.flag(probs, min_margin=0.1).tolist() == [False, True, True, True]
    assert metrics.flag(probs, max_entropy=0.9).tolist() == [False, False, True, True]
    assert metrics.flag(probs).tolist() == [False, False, False, True]


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match=r"shape \(n, n_classes\)"):
        metrics.max_prob(np.zeros(3))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        calibration.nll(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(TypeError, match="class indices"):
        calibration.accuracy(np.full((1, 3), 1 / 3), np.array([0.5]))
    with pytest.raises(ValueError, match="norm"):
        calibration.calibration_error(np.full((1, 3), 1 / 3), np.array([0]), norm="l3")


def overconfident(n, seed):
    """Logits of a model that is right ~70% of the time but 5x too sure of itself."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), targets] += 1.5
    return logits * 5, targets


def softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_temperature_scaling_lowers_held_out_nll_and_ece():
    fit_logits, fit_targets = overconfident(2000, 0)
    test_logits, test_targets = overconfident(2000, 1)
    t = fit_temperature(fit_logits, fit_targets)
    assert 3 < t < 7
    before, after = softmax(test_logits), softmax(test_logits / t)
    assert calibration.nll(after, test_targets) < 0.6 * calibration.nll(before, test_targets)
    assert calibration.calibration_error(after, test_targets) < 0.5 * calibration.calibration_error(
        before, test_targets
    )


@pytest.mark.parametrize(("method", "randomized"), [("lac", False), ("aps", False), ("aps", True)])
def test_conformal_sets_reach_coverage(method, randomized):
    rng = np.random.default_rng(42)
    alpha, coverages, sizes = 0.1, [], []
    logits, targets = overconfident(4000, 7)
    probs = softmax(logits / 3)
    for _ in range(20):
        perm = rng.permutation(len(probs))
        cal, test = perm[:1000], perm[1000:]
        seeds = rng.integers(0, 2**31, 2)
        q = conformal_threshold(probs[cal], targets[cal], alpha, method, randomized=randomized,
                                seed=seeds[0])  # fmt: skip
        sets = prediction_sets(probs[test], q, method, randomized=randomized, seed=seeds[1])
        coverages.append(sets[np.arange(len(test)), targets[test]].mean())
        sizes.append(sets.sum(1).mean())
    assert np.mean(coverages) >= 1 - alpha - 0.02
    assert min(coverages) >= 1 - alpha - 0.05
    assert np.mean(sizes) < 4  # informative, not the trivial full set
    if randomized:  # close to exact coverage, not over-covering
        assert np.mean(coverages) < 1 - alpha + 0.03
    print(f"{method} randomized={randomized}: coverage {np.mean(coverages):.3f} "
          f"(min {min(coverages):.3f}), mean set size {np.mean(sizes):.2f}")  # fmt: skip
    with pytest.raises(ValueError, match="too few"):
        conformal_threshold(probs[:5], targets[:5], alpha=0.05)


def test_flag_per_class_thresholds_apply_by_predicted_label():
    labels = ["letter", "invoice", "memo"]
    p = np.array([[0.85, 0.1, 0.05], [0.1, 0.85, 0.05], [0.2, 0.2, 0.6], [np.nan, 0.5, 0.5]])
    got = metrics.flag(p, min_confidence={"invoice": 0.9, "letter": 0.8}, labels=labels)
    assert got.tolist() == [False, True, False, True]  # memo has no threshold; NaN always flagged
    margins = metrics.flag(p, min_margin={"memo": 0.5}, labels=labels)
    assert margins.tolist() == [False, False, True, True]
    both = metrics.flag(p, min_confidence={"letter": 0.9}, max_entropy=0.5, labels=labels)
    assert both.tolist() == [True, False, True, True]
    assert metrics.flag(p[:0], min_confidence={"memo": 0.5}, labels=labels).tolist() == []
    with pytest.raises(ValueError, match="needs labels="):
        metrics.flag(p, min_confidence={"invoice": 0.9})
    with pytest.raises(ValueError, match=r"\['invoce'\], which are not among the labels"):
        metrics.flag(p, min_confidence={"invoce": 0.9}, labels=labels)


def test_head_flagged_keys_per_class():
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3) * 4)
    from probhook import capture_probs

    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.2]])
    with capture_probs(model, labels=["letter", "invoice", "memo"]) as cap, cap.keys_for("abc"):
        model(x)
    conf = dict(zip("abc", cap.head.confidence().round(3), strict=True))
    assert conf["a"] == conf["b"] > 0.9 > conf["c"]
    assert cap.flagged_keys(min_confidence={"invoice": 0.99, "letter": 0.9}) == ["b"]
    assert cap.flagged_keys(min_confidence=0.9) == ["c"]
    assert cap.flag(min_confidence={"memo": 0.99}).tolist() == [False, False, True]
