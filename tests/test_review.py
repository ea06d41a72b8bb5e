"""Review thresholds with a guarantee: held-out error of the accepted rows within max_error in at
least 1 - delta - 0.02 of 200 random calibration/test splits, the fixed-sequence rule itself,
Clopper-Pearson bounds, per-class rules, ``flag(rule)``, and word rows of a real pipeline."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from probhook import capture_probs, metrics
from probhook.review import (
    NONE,
    clopper_pearson_upper,
    fewest_rows,
    review_threshold,
    select,
    start_of_sequence,
)

LABELS = ["letter", "invoice", "form", "memo"]


def calibrated(rng, n, scale=3.0, C=4):
    z = rng.normal(size=(n, C)) * scale
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.minimum((p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), C - 1)
    return p, y


@pytest.mark.parametrize(("max_error", "delta"), [(0.02, 0.05), (0.05, 0.1)])
def test_held_out_error_stays_within_max_error_in_enough_of_200_splits(max_error, delta):
    probs, targets = calibrated(np.random.default_rng(0), 30_000)
    held, coverage = [], []
    for split in range(200):
        order = np.random.default_rng(split).permutation(len(probs))
        cal, test = order[:5000], order[5000:]
        rule = review_threshold(probs[cal], targets[cal], max_error, delta)
        accepted = ~metrics.flag(probs[test], rule)
        wrong = probs[test][accepted].argmax(axis=1) != targets[test][accepted]
        held.append(wrong.mean() if accepted.any() else 0.0)
        coverage.append(accepted.mean())
        assert rule.coverage == pytest.approx(
            (probs[cal].max(axis=1) >= rule.min_confidence).mean()
        )
    within = np.mean(np.array(held) <= max_error)
    assert within >= 1 - delta - 0.02, within
    assert np.mean(coverage) > 0.15  # the rule accepts a useful share, not nothing
    assert np.mean(np.array(coverage) == 0) < 0.05


def test_clopper_pearson_upper_bound_is_the_beta_quantile():
    k, n = np.array([0, 3, 10, 50, 7]), np.array([149, 200, 1000, 50, 7])
    expected = [
        scipy.stats.beta.ppf(0.95, a + 1, b - a) if a < b else 1.0
        for a, b in zip(k, n, strict=False)
    ]
    np.testing.assert_allclose(clopper_pearson_upper(k, n, 0.05), expected, rtol=1e-10)
    # the bound at level 1 - delta: Binomial(n, bound) puts delta on k or fewer errors
    bound = clopper_pearson_upper(3, 200, 0.05)
    assert scipy.stats.binom.cdf(3, 200, bound) == pytest.approx(0.05)
    assert fewest_rows(0.02, 0.05) == 149
    assert fewest_rows(0.01, 0.05) == 299
    assert clopper_pearson_upper(0, 149, 0.05) <= 0.02 < clopper_pearson_upper(0, 148, 0.05)


def test_the_sequence_stops_at_its_first_failure():
    """Thresholds from high to low; a later one that would pass again is never reached."""
    conf = np.linspace(0.999, 0.5, 3000)
    wrong = np.zeros(3000, bool)
    wrong[1200:1260] = True  # a burst of errors: bounds fail from here ...
    wrong[2000:] = False  # ... and would pass again further down, with many more rows
    rule = select(conf, wrong, 0.02, 0.05)
    start = start_of_sequence(conf, np.arange(3000), 0.02, 0.05)
    bounds = clopper_pearson_upper(np.cumsum(wrong), np.arange(1, 3001), 0.05)
    first_fail = start + int(np.argmax(bounds[start:] > 0.02))
    assert rule.accepted == first_fail  # the last that passed is just before the first failure
    assert rule.threshold == conf[first_fail - 1]
    assert rule.bound == pytest.approx(bounds[first_fail - 1])
    assert rule.bound <= 0.02
    assert bounds[2999] <= 0.05
    assert rule.tested == first_fail - start + 1
    # ties: a threshold accepts every row of its confidence, so only the last of a tie counts
    tied = select(np.repeat([0.99, 0.98], 400), np.zeros(800, bool), 0.02, 0.05)
    assert (tied.threshold, tied.accepted) == (0.98, 800)


def test_the_start_of_the_sequence_does_not_look_at_labels():
    conf = np.sort(np.random.default_rng(1).uniform(0.99, 1.0, 2000))[::-1]
    last = np.arange(2000)
    start = start_of_sequence(conf, last, 0.02, 0.05)
    expected = np.cumsum(1 - conf)
    assert clopper_pearson_upper(np.ceil(expected[start]) + 1, start + 1, 0.05) <= 0.02
    assert clopper_pearson_upper(np.ceil(expected[start - 1]) + 1, start, 0.05) > 0.02
    hopeless = np.full(500, 0.3)  # no candidate would pass: start where zero errors could
    assert start_of_sequence(hopeless, np.arange(500), 0.02, 0.05) == fewest_rows(0.02, 0.05) - 1


def head_of(probs):
    model = torch.nn.Identity()
    with capture_probs(model, labels=LABELS, activation="none", capacity=len(probs)) as cap:
        model(torch.as_tensor(probs, dtype=torch.float32))
    return cap.heads["model"]


def test_flag_takes_the_rule_per_class_too():
    probs, targets = calibrated(np.random.default_rng(2), 20_000)
    view = head_of(probs)
    rule = view.review_threshold([LABELS[t] for t in targets], max_error=0.03, delta=0.05)
    assert isinstance(rule.min_confidence, float)
    assert view.flag(rule).tolist() == (view.confidence() < rule.min_confidence).tolist()
    assert len(view.flagged_keys(rule)) == int(view.flag(rule).sum())
    both = view.flag(rule, min_margin=0.5)
    assert both.tolist() == (view.flag(rule) | (view.margin() < 0.5)).tolist()
    with pytest.raises(ValueError, match="min_confidence is given twice"):
        view.flag(rule, min_confidence=0.5)
    per_class = view.review_threshold(targets, max_error=0.03, delta=0.05, per_class=True)
    assert set(per_class.min_confidence) == set(LABELS)
    assert per_class.classes["invoice"].bound <= 0.03 or per_class.classes["invoice"].accepted == 0
    predicted = view.probs.argmax(axis=1)
    limits = np.array([per_class.min_confidence[label] for label in LABELS])[predicted]
    assert view.flag(per_class).tolist() == (view.confidence() < limits).tolist()
    assert metrics.flag(view.probs, per_class).tolist() == view.flag(per_class).tolist()
    # each class is tested at delta / C: all classes hold together with 1 - delta
    for name, s in per_class.classes.items():
        k = LABELS.index(name)
        alone = select(view.confidence()[predicted == k], (targets != k)[predicted == k],
                       0.03, 0.05 / 4)  # fmt: skip
        assert (alone.threshold, alone.accepted) == (s.threshold, s.accepted)


def test_too_few_rows_certify_nothing_and_nan_rows_are_left_out():
    probs, targets = calibrated(np.random.default_rng(3), 100)
    rule = review_threshold(probs, targets, 0.02, 0.05)  # 100 < 149 rows: cannot pass
    assert rule.min_confidence == NONE
    assert rule.coverage == 0.0
    assert metrics.flag(probs, rule).all()
    assert "none (review all)" in str(rule)
    probs[:5] = np.nan
    probs2, targets2 = calibrated(np.random.default_rng(4), 5000)
    rule = review_threshold(np.r_[probs[:5], probs2], np.r_[targets[:5], targets2], 0.05, 0.05)
    assert (rule.n, rule.excluded) == (5000, 5)
    assert metrics.flag(np.r_[probs[:5], probs2], rule)[:5].all()  # NaN rows: always reviewed
    with pytest.raises(ValueError, match=r"max_error and delta must lie in \(0, 1\)"):
        review_threshold(probs2, targets2, 0.0, 0.05)
    with pytest.raises(ValueError, match=r"targets must be 5000 class indices"):
        review_threshold(probs2, targets2[:10], 0.02, 0.05)
    with pytest.raises(ValueError, match=r"no calibration rows .* \(3 not finite\)"):
        review_threshold(np.full((3, 4), np.nan), [0, 1, 2], 0.02, 0.05)


def test_word_rows_of_a_real_token_pipeline(tmp_path):
    """Word rows are rows of their head: a rule from labelled words flags words."""
    from probhook.testing import build_token_model, make_token_pages, make_token_pipe, run_pipe

    tiny = build_token_model("layoutlm", tmp_path / "token")
    pipe = make_token_pipe(tiny, sliding_window_stride=16)
    with capture_probs(pipe) as cap:
        run_pipe(pipe, make_token_pages(30, n_documents=5, words_per_page=(70, 90), seed=1))
    words = next(v for v in cap.heads.values() if "word_id" in v.schema)
    assert len(words) > 1500
    rng = np.random.default_rng(5)
    probs = words.probs.astype(np.float64)
    # true tags drawn from the word's own distribution: the model is calibrated by construction
    truth = np.minimum((probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1),
                       probs.shape[1] - 1)  # fmt: skip
    rule = words.review_threshold([words.labels[t] for t in truth], max_error=0.1, delta=0.1)
    flagged = words.flag(rule)
    assert flagged.tolist() == (words.confidence() < rule.min_confidence).tolist()
    accepted = ~flagged
    assert 0.1 < rule.coverage == pytest.approx(accepted.mean())
    assert math.isfinite(rule.min_confidence)
    # on the calibration rows themselves: the errors counted are those the bound was made from
    assert (probs[accepted].argmax(1) != truth[accepted]).mean() == pytest.approx(rule.error)
    assert rule.error <= rule.error_bound <= 0.1
    page = words.column("image_id")[0]
    assert [d.key for d in words.words(page)]  # word rows are still read as words
