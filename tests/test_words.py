"""The word rules against a literal copy of deepdoctection's loop and hand computations."""

from collections import defaultdict

import numpy as np
import pytest
import torch

from probhook import Distribution
from probhook.integrations.deepdoctection.tokens import dd_tagged, dd_window_positions
from probhook.integrations.hf_models import token_rows
from probhook.words import entity_distribution, fold_entities, word_rows

SPECIAL_IDS = {101, 102, 0}
SPECIAL_TOKENS = {"[CLS]", "[SEP]", "[PAD]"}  # a BERT tokenizer's: deepdoctection's placeholders


def dd_reference(uuids, input_ids, logits, tokens):
    """``predict_token_classes_from_layoutlm``'s loop after the forward, and serve's filter,
    copied from deepdoctection 1.4 (lists instead of its result objects)."""
    soft_max = torch.nn.functional.softmax(logits, dim=2)
    score = torch.max(soft_max, dim=2)[0].tolist()
    token_class_predictions = logits.argmax(-1).tolist()
    ids = input_ids.tolist()
    all_results = defaultdict(list)
    for idx, uuid_list in enumerate(uuids):
        for pos, token in enumerate(uuid_list):
            all_results[token].append(
                (ids[idx][pos], token_class_predictions[idx][pos], tokens[idx][pos],
                 score[idx][pos], idx, pos)
            )  # fmt: skip
    out = []
    for uuid, res in all_results.items():
        res.sort(key=lambda x: x[3], reverse=True)
        o = res[0]
        kept = o[0] not in SPECIAL_IDS and not o[2].startswith("##")
        out.append((uuid, o[1], o[3], kept, o[4], o[5]))
    return [r for r in out if r[0] not in ("[CLS]", "[SEP]", "[PAD]")]


def random_forward(seed, n_windows, length, n_classes=7, quant=None):
    """Logits and dd-style encodings; ``quant`` rounds logits so that many scores tie."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_windows, length, n_classes, generator=g) * 3
    if quant:
        logits = (logits * quant).round() / quant
    rng = np.random.default_rng(seed)
    uuids, tokens, input_ids = [], [], []
    for _ in range(n_windows):
        n = int(rng.integers(length // 2, length - 1))
        words = rng.integers(0, 12, size=n)
        pad = length - n - 2
        uuids.append(["[CLS]", *[f"w{x}" for x in words], "[SEP]", *["[PAD]"] * pad])
        ids = [int(rng.integers(104, 200)) if rng.random() > 0.05 else 102 for _ in words]
        # a fast tokenizer's token strings stand for their ids: id 102 is the string "[SEP]"
        pieces = ["[SEP]" if i == 102 else "##z" if rng.random() < 0.4 else "tok" for i in ids]
        tokens.append(["[CLS]", *pieces, "[SEP]", *["[PAD]"] * pad])
        input_ids.append([101, *ids, 102, *[0] * pad])
    return logits, uuids, tokens, torch.tensor(input_ids)


@pytest.mark.parametrize("seed", range(24))
def test_dd_rule_is_deepdoctections_loop(seed):
    quant = (None, 1, 4)[seed % 3]  # quantised logits: many exact ties
    logits, uuids, tokens, input_ids = random_forward(
        seed, 1 + seed % 5, 24 + seed % 9, quant=quant
    )
    expected = dd_reference(uuids, input_ids, logits, tokens)
    probs = torch.softmax(logits, -1).numpy()
    rows = word_rows(probs, uuids, "dd", special_word_ids=SPECIAL_TOKENS)
    assert rows.word_ids == [r[0] for r in expected]  # reading order: first appearance
    assert rows.dd_token.tolist() == [r[4] * logits.shape[1] + r[5] for r in expected]
    assert rows.probs.argmax(1).tolist() == [r[1] for r in expected]
    assert [float(p) for p in rows.probs.max(1)] == [r[2] for r in expected]  # bit for bit
    tagged = dd_tagged(rows, tokens, SPECIAL_TOKENS)
    assert tagged.tolist() == [r[3] for r in expected]


@pytest.mark.parametrize("seed", range(12))
def test_first_and_mean_equal_a_hand_computation(seed):
    logits, uuids, _, _ = random_forward(100 + seed, 1 + seed % 4, 20 + seed % 7)
    probs = torch.softmax(logits, -1).numpy()
    n_windows, length, _ = probs.shape
    flat_ids = [a for window in uuids for a in window]
    flat = probs.reshape(-1, probs.shape[-1])
    first, mean = (
        word_rows(probs, uuids, "first", special_word_ids=SPECIAL_TOKENS),
        word_rows(probs, uuids, "mean", special_word_ids=SPECIAL_TOKENS),
    )
    for i, word in enumerate(first.word_ids):
        occurrences = [k for k, a in enumerate(flat_ids) if a == word]
        assert np.array_equal(first.probs[i], flat[occurrences[0]])
        hand = flat[occurrences].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(mean.probs[i], hand, atol=1e-7, rtol=0)
        assert mean.n_tokens[i] == len(occurrences)
    np.testing.assert_allclose(mean.probs.sum(1), 1, atol=1e-5)
    # with window positions: copies of one token are averaged first; first = lowest position
    positions = dd_window_positions(n_windows, length, 16)
    if positions is None:
        return
    flat_pos = positions.reshape(-1)
    special = SPECIAL_TOKENS
    first_p = word_rows(probs, uuids, "first", special_word_ids=special, positions=positions)
    mean_p = word_rows(probs, uuids, "mean", special_word_ids=special, positions=positions)
    for i, word in enumerate(mean_p.word_ids):
        occurrences = [k for k, a in enumerate(flat_ids) if a == word]
        copies = defaultdict(list)
        for k in occurrences:
            copies[flat_pos[k]].append(flat[k].astype(np.float64))
        hand = np.mean([np.mean(c, axis=0) for c in copies.values()], axis=0)
        np.testing.assert_allclose(mean_p.probs[i], hand, atol=1e-7, rtol=0)
        earliest = min(occurrences, key=lambda k: (flat_pos[k], k))
        assert np.array_equal(first_p.probs[i], flat[earliest])


def test_window_positions_follow_dd_cores_layout():
    assert dd_window_positions(1, 8, 16) is None
    assert dd_window_positions(3, 8, 0) is None
    positions = dd_window_positions(3, 6, 4)
    # window 0 starts after [CLS] at token 1 (position 1); window k at token max(k * 4, 1)
    assert positions[:, 1].tolist() == [1, 4, 8]


def test_words_without_tokens_and_bad_shapes():
    probs = np.full((1, 3, 2), 0.5, np.float32)
    empty = word_rows(probs, [[None, None, None]], "mean")
    assert empty.word_ids == []
    assert empty.probs.shape == (0, 2)
    with pytest.raises(ValueError, match="do not match"):
        word_rows(probs, [[None, "a"]], "dd")
    with pytest.raises(ValueError, match="word_rule must be one of"):
        word_rows(probs, [[None, "a", "a"]], "last")


def test_token_rows_keep_attended_tokens():
    probs = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    rows, index = token_rows(probs, torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert index.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert rows.tolist() == [[0, 1], [2, 3], [6, 7]]
    assert len(token_rows(probs)[0]) == 6


def test_entity_folding_sums_tags_per_entity():
    labels = ("B-answer", "B-header", "B-question", "I-answer", "I-header", "I-question", "O")
    p = np.array([0.1, 0.05, 0.2, 0.3, 0.05, 0.1, 0.2])
    folded, names = fold_entities(p, labels)
    assert names == ("answer", "header", "question", "O")
    np.testing.assert_allclose(folded, [0.4, 0.1, 0.3, 0.2])
    dist = entity_distribution(Distribution(p, labels, key="w1", meta={"word": "total"}))
    assert (dist.predicted, dist.key, dist.meta) == ("answer", "w1", {"word": "total"})
    _, bioes = fold_entities(np.ones(4) / 4, ["S-date", "E-date", "B-x", "other"])
    assert bioes == ("date", "x", "other")
