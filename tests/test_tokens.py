"""Per-word distributions of token-classification heads, against the real deepdoctection
pipeline (every family) and a plain Hugging Face token classifier."""

from collections import defaultdict

import numpy as np
import pytest
import torch

from probhook import capture_probs, load
from probhook.integrations.deepdoctection.tokens import dd_window_positions
from probhook.testing import (
    MODEL_KINDS,
    build_model,
    build_token_model,
    make_token_pages,
    make_token_pipe,
    run_pipe,
)

dd = pytest.importorskip("deepdoctection")
SPECIAL = {0, 101, 102}


@pytest.fixture(scope="module")
def token_models(tmp_path_factory):
    """One tiny token classifier per family and a sequence classifier, built once."""
    root = tmp_path_factory.mktemp("token-models")
    models = {k: build_token_model(k, root / k, seed=i) for i, k in enumerate(MODEL_KINDS)}
    return models, build_model("layoutlm", root / "sequence", seed=1)


def pages_for(kind, seed):
    """Shuffled pages of three documents, up to 90 words (several 64-token windows)."""
    return make_token_pages(
        6, n_documents=3, words_per_page=(70, 20, 55, 90, 33), empty_pages=(5,),
        with_pixels=kind == "layoutlmv3", seed=seed,
    )  # fmt: skip


def words_of(page):
    return page.get_annotation(category_names=dd.LayoutLabel.WORD)


def text_of(word):
    return word.get_sub_category(dd.WordKey.CHARACTERS).value


def hand_rows(tokenizer, words, input_ids, logits, stride):
    """First and mean rows per word index, computed from the model's own logits and the page's
    un-windowed tokenisation (every window position is checked against it first)."""
    full = tokenizer([text_of(w) for w in words], is_split_into_words=True, truncation=False)
    full_ids, full_words = full["input_ids"], full.word_ids()
    n_windows, length, _ = logits.shape
    positions = dd_window_positions(n_windows, length, stride)
    probs = torch.softmax(logits, -1)
    copies = defaultdict(lambda: defaultdict(list))  # word -> token index -> rows
    for k in range(n_windows):
        for j in range(length):
            if int(input_ids[k, j]) in SPECIAL:
                continue
            t = j if positions is None else int(positions[k, j])
            assert full_ids[t] == int(input_ids[k, j])  # the window layout is understood
            copies[full_words[t]][t].append(probs[k, j].double().numpy())
    first = {w: np.float32(c[min(c)][0]) for w, c in copies.items()}
    mean = {w: np.mean([np.mean(r, axis=0) for r in c.values()], axis=0) for w, c in copies.items()}
    return first, mean


@pytest.mark.parametrize("stride", [0, 16])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_word_matches_deepdoctection(token_models, kind, stride):
    models, sequence = token_models
    tiny = models[kind]
    # with a stride: a sequence service in the same pipe, both heads exact
    pipe = make_token_pipe(
        tiny, sliding_window_stride=stride, sequence=sequence if stride else None
    )
    service = pipe.pipe_component_list[0]
    module = service.language_model.model
    forwards = []
    handle = module.register_forward_hook(
        lambda m, a, kw, out: forwards.append((kw["input_ids"], out.logits.detach())),
        with_kwargs=True,
    )
    try:
        with (
            capture_probs(pipe) as cap,
            capture_probs(pipe, word_rule="first") as by_first,
            capture_probs(pipe, word_rule="mean") as by_mean,
        ):
            pages = run_pipe(pipe, pages_for(kind, seed=stride + 1))
    finally:
        handle.remove()
    assert len({p.document_id for p in pages}) == 3
    token_head = next(n for n, v in cap.heads.items() if "word_id" in v.schema)
    assert cap.heads[token_head].labels == tiny.labels
    assert len(cap.heads) == (2 if stride else 1)
    tokenizer = tiny.load_tokenizer()
    n_tagged = n_rows = n_words = 0
    for page in pages:
        words = words_of(page)
        n_words += len(words)
        if words or kind == "bert":  # one forward per page (none for a LayoutLM page without words)
            input_ids, logits = forwards.pop(0)
            first, mean = hand_rows(tokenizer, words, input_ids, logits, stride)
        row_ids = [d.key for d in cap.words(page)]
        assert row_ids == [w.annotation_id for w in words if w.annotation_id in row_ids]
        for i, word in enumerate(words):
            dist, tag = cap.get(word), word.sub_categories.get(dd.WordKey.TOKEN_TAG)
            if dist is None:  # truncated away without a stride: dd has no tag either
                assert stride == 0
                assert tag is None
                assert i not in first
                continue
            n_rows += 1
            assert dist.key == dist.meta["word_id"] == word.annotation_id
            assert dist.meta["word"] == text_of(word)
            assert (dist.meta["image_id"], dist.meta["document_id"]) == (
                page.image_id,
                page.document_id,
            )
            assert (dist.meta["page_number"], dist.meta["file_name"]) == (
                page.page_number,
                page.file_name,
            )
            assert abs(float(dist.probs.sum(dtype=np.float64)) - 1) <= 1e-5
            assert dist.meta["dd_tagged"] == (tag is not None)
            if tag is not None:
                n_tagged += 1
                assert dist.predicted == str(tag.category_name.value)
                assert round(dist.confidence, 8) == tag.score
            assert np.array_equal(by_first.heads[token_head].get(word).probs, first[i])
            np.testing.assert_allclose(
                by_mean.heads[token_head].get(word).probs, mean[i], atol=1e-7, rtol=0
            )
        if stride and page.document_type is None:  # no words: no forward, no row
            assert cap.get(page) is None
        elif stride:  # the sequence head, in the same pipe, is exact too
            page_dist = cap.get(page)
            stored = page.summary.get_sub_category("document_type")
            assert page_dist.predicted == str(page.document_type.value)
            assert round(page_dist.confidence, 8) == stored.score
    assert not forwards
    assert n_tagged > 0.5 * n_rows
    if stride:  # pages longer than a window: every word is covered by some window
        assert n_rows == n_words
    else:  # ... and truncated without the stride
        assert n_rows < n_words
    assert "serve" not in vars(service)
    assert "predict" not in vars(service.language_model)
    assert not module._forward_hooks


def test_service_and_wrapper_targets_bounded_memory_and_export(token_models, tmp_path):
    models, _ = token_models
    pipe = make_token_pipe(models["lilt"], sliding_window_stride=16)
    service = pipe.pipe_component_list[0]
    with capture_probs(service, capacity=100, sink=tmp_path / "words.parquet") as cap:
        pages = run_pipe(pipe, make_token_pages(4, words_per_page=90, seed=3))
    assert len(cap) == 100  # the ring counts word rows
    assert cap.evicted == 4 * 90 - 100
    assert len(cap.words(pages[-1])) == 90
    df = cap.to_pandas()
    for column in ("word_id", "word", "dd_tagged", "image_id", "document_id", "file_name",
                   "location", "page_number"):  # fmt: skip
        assert column in df.columns
    assert df["key"].tolist() == df["word_id"].tolist()
    low = cap.flag(min_confidence=0.6)
    assert low.any()
    assert low.tolist() == (df["confidence"] < 0.6).tolist()
    saved = load(tmp_path / "words.parquet")
    assert len(saved) == 4 * 90
    assert saved.get(words_of(pages[0])[0].annotation_id).meta["word"] == text_of(
        words_of(pages[0])[0]
    )

    with capture_probs(service.language_model) as by_wrapper:  # no page: keys and image ids
        pages = run_pipe(pipe, make_token_pages(2, words_per_page=30, seed=4))
    for page in pages:
        for word in words_of(page):
            dist = by_wrapper.get(word.annotation_id)
            assert dist.meta["image_id"] == page.image_id
            assert dist.meta["document_id"] is None


def test_entity_view_of_a_word(token_models):
    from probhook.words import entity_distribution

    models, _ = token_models
    pipe = make_token_pipe(models["layoutlm"])
    with capture_probs(pipe) as cap:
        page = run_pipe(pipe, make_token_pages(1, words_per_page=10, seed=5))[0]
    dist = cap.words(page)[0]
    entity = entity_distribution(dist)
    assert entity.labels == ("answer", "header", "question", "O")
    answer = sum(p for label, p in dist.as_dict().items() if label.endswith("-answer"))
    assert entity.as_dict()["answer"] == pytest.approx(answer)


# -- plain Hugging Face ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_token(token_models):
    models, _ = token_models
    tiny = models["bert"]
    return tiny.load_model(), tiny.load_tokenizer()


SENTENCES = [["total", "qzv", "amount", "2024"], ["dear", "xylo", "mjrt"], ["name"]]


def hand_words(logits, word_ids, rule):
    probs = torch.softmax(logits, -1)
    out = {}
    for s, ids in enumerate(word_ids):
        by_word = defaultdict(list)
        for t, w in enumerate(ids):
            if w is not None:
                by_word[w].append(t)
        for w, ts in by_word.items():
            rows = probs[s, ts]
            if rule == "first":
                out[(s, w)] = rows[0].numpy()
            elif rule == "mean":
                out[(s, w)] = rows.double().mean(0).numpy()
            else:  # the most confident piece, the earliest on ties
                out[(s, w)] = rows[int(np.argmax(rows.max(-1).values.numpy()))].numpy()
    return out


@pytest.mark.parametrize("rule", ["dd", "first", "mean"])
def test_hugging_face_token_classifier_rows_per_word(hf_token, rule):
    model, tokenizer = hf_token
    enc = tokenizer(SENTENCES, is_split_into_words=True, padding=True, return_tensors="pt")
    with capture_probs(model, word_rule=rule) as cap, cap.tokens(enc), torch.no_grad():
        logits = model(**enc).logits
    expected = hand_words(logits, [enc.word_ids(i) for i in range(len(SENTENCES))], rule)
    assert cap.keys == list(expected)  # (sequence, word), in order
    for key, row in expected.items():
        np.testing.assert_allclose(cap.get(key).probs, row, atol=1e-7, rtol=0)
    assert cap.column("word_index").tolist() == [k[1] for k in expected]
    assert cap.labels == models_labels(model)


def models_labels(model):
    return tuple(model.config.id2label[i] for i in range(len(model.config.id2label)))


def test_hugging_face_rows_per_token_without_words(hf_token):
    model, tokenizer = hf_token
    enc = tokenizer(SENTENCES, is_split_into_words=True, padding=True, return_tensors="pt")
    with capture_probs(model) as cap, torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1)
    mask = enc["attention_mask"].bool()
    assert len(cap) == int(mask.sum())  # padding never becomes a row
    np.testing.assert_allclose(cap.probs, probs[mask].numpy(), atol=1e-7)
    assert cap.keys[:2] == [(0, 0), (0, 1)]


def test_hugging_face_overlapping_windows_give_one_row_per_word(hf_token):
    model, tokenizer = hf_token
    words = [["total", "qzv", "amount", "xylo"] * 6]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=16, stride=4,
                    return_overflowing_tokens=True, padding=True, return_tensors="pt")  # fmt: skip
    assert len(enc["input_ids"]) > 1
    model_inputs = {k: v for k, v in enc.items() if k != "overflow_to_sample_mapping"}
    with capture_probs(model, word_rule="mean") as cap, cap.tokens(enc), torch.no_grad():
        model(**model_inputs)
    assert sorted(cap.keys) == [(0, w) for w in range(len(words[0]))]


def test_unmappable_token_heads_are_refused_at_start(hf_token):
    model, _ = hf_token
    hooks = {id(m): len(m._forward_hooks) for m in model.modules()}
    with pytest.raises(ValueError, match="inside the token classifier"):
        capture_probs(model, heads="classifier").start()
    assert {id(m): len(m._forward_hooks) for m in model.modules()} == hooks
    cap = capture_probs(model)
    ids = {"input_ids": torch.tensor([[101, 104, 102]])}  # no word ids: refused at the with
    with pytest.raises(TypeError, match="fast tokenizer"), cap.tokens(ids):
        pass
    with pytest.raises(ValueError, match="word_rule"):
        capture_probs(model, word_rule="last")
    with pytest.raises(ValueError, match="keep_logits"):
        capture_probs(model, word_rule="mean", keep_logits=True)


class OwnTokenClassifier(dd.LMTokenClassifier):
    """A user's own deepdoctection token classifier: its predict() is not known to pass word ids."""

    def __init__(self, model):
        self.model, self.name = model, "own"

    def predict(self, **encodings):
        return []

    @classmethod
    def get_requirements(cls):
        return []

    def clone(self):
        return OwnTokenClassifier(self.model)


def test_unknown_deepdoctection_token_classifier_is_refused_at_start(token_models):
    models, _ = token_models
    pipe = make_token_pipe(models["bert"])
    service = pipe.pipe_component_list[0]
    model = service.language_model.model
    service.language_model = OwnTokenClassifier(model)  # a service around the user's own wrapper
    with pytest.raises(ValueError, match="cannot be mapped to words"):
        capture_probs(pipe).start()
    assert "serve" not in vars(service)
    assert "predict" not in vars(service.language_model)
    assert not model._forward_hooks


def assert_exact(cap, pages):
    """Every tagged word's row is deepdoctection's tag and score, on its own page."""
    n = 0
    for page in pages:
        for word in words_of(page):
            tag = word.sub_categories.get(dd.WordKey.TOKEN_TAG)
            if tag is not None:
                dist = cap.get(word)
                assert dist.meta["image_id"] == page.image_id
                assert dist.predicted == str(tag.category_name.value)
                assert round(dist.confidence, 8) == tag.score
                n += 1
    assert n > 0


def test_two_threads_serving_through_one_shared_wrapper(token_models):
    import threading

    from probhook.testing import make_token_service

    models, _ = token_models
    first = make_token_service(models["layoutlm"], sliding_window_stride=16)
    second = make_token_service(models["layoutlm"], sliding_window_stride=16,
                                wrapper=first.language_model)  # fmt: skip
    pipes = [dd.DoctectionPipe(pipeline_component_list=[s]) for s in (first, second)]
    both = dd.DoctectionPipe(pipeline_component_list=[first, second])
    pages = make_token_pages(8, seed=20)  # distinct pages (ids derive from file names)
    inputs = [pages[:4], pages[4:]]
    outputs = {}
    with capture_probs(both) as cap:  # one module, one head, one hook
        threads = [
            threading.Thread(
                target=lambda i=i: outputs.__setitem__(i, run_pipe(pipes[i], inputs[i]))
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(cap.heads) == 1
    assert_exact(cap, outputs[0] + outputs[1])


def test_a_swapped_token_model_is_followed(token_models, tmp_path):
    models, _ = token_models
    pipe = make_token_pipe(models["layoutlm"], sliding_window_stride=16)
    service = pipe.pipe_component_list[0]
    other = build_token_model("layoutlm", tmp_path / "other", seed=7).load_model()
    pages = make_token_pages(4, seed=30)
    with capture_probs(pipe) as cap:
        done = run_pipe(pipe, pages[:2])
        service.language_model.model = other
        done += run_pipe(pipe, pages[2:])
    assert_exact(cap, done)
    assert not other._forward_hooks


@pytest.mark.parametrize("stride", [0, 16])
def test_kept_logits_are_the_logits_of_the_token_that_speaks(token_models, stride):
    models, _ = token_models
    pipe = make_token_pipe(models["layoutlm"], sliding_window_stride=stride)
    module = pipe.pipe_component_list[0].language_model.model
    forwards = []
    handle = module.register_forward_hook(lambda m, a, out: forwards.append(out.logits.detach()))
    try:
        with capture_probs(pipe, keep_logits=True) as cap:  # short pages: windows mostly padding
            pages = run_pipe(pipe, make_token_pages(4, words_per_page=(12, 90), seed=7))
    finally:
        handle.remove()
    assert len(forwards) == len(pages)
    for page, logits in zip(pages, forwards, strict=True):
        rows = logits.reshape(-1, logits.shape[-1]).numpy()
        for dist in cap.words(page):
            assert any(np.array_equal(dist.logits, row) for row in rows)
            from_logits = torch.softmax(torch.from_numpy(dist.logits), -1).numpy()
            assert np.array_equal(from_logits, dist.probs)  # row by row: bit for bit


def test_only_a_trailing_run_of_padding_is_left_out():
    from probhook.integrations.deepdoctection.tokens import _unpadded_length

    right = [
        ["[CLS]", "a", "b", "[SEP]", "[PAD]", "[PAD]"],
        ["[CLS]", "c", "[SEP]", "[PAD]", "[PAD]", "[PAD]"],
    ]
    assert _unpadded_length(right, 6, "[PAD]") == 4  # the longer window decides
    left = [["[PAD]", "[PAD]", "[CLS]", "a", "b", "[SEP]"]]
    assert _unpadded_length(left, 6, "[PAD]") == 6
    inside = [["[CLS]", "a", "[PAD]", "b", "[SEP]", "[PAD]"]]
    assert _unpadded_length(inside, 6, "[PAD]") == 6
    assert _unpadded_length([["[CLS]", "a", "[SEP]"]], 3, "[PAD]") == 3
    roberta = [["<s>", "a", "</s>", "<pad>", "<pad>"]]  # the tokenizer's own pad token
    assert _unpadded_length(roberta, 5, "<pad>") == 3
    assert _unpadded_length(roberta, 5, None) == 5  # pad unknown (a bare wrapper): keep all


@pytest.mark.parametrize("stride", [0, 16])
@pytest.mark.parametrize("kind", ["lilt", "layoutlmv3"])
def test_roberta_style_special_tokens_are_never_words(tmp_path, kind, stride):
    """A byte-level BPE tokenizer's <s>, </s> and <pad> stand where deepdoctection's word ids
    are: they are special positions, not words, for a service and for a bare wrapper."""
    from probhook.testing import BPE_SPECIAL

    tiny = build_token_model(kind, tmp_path / kind, tokenizer="bpe")
    pipe = make_token_pipe(tiny, sliding_window_stride=stride)
    wrapper = pipe.pipe_component_list[0].language_model
    with capture_probs(pipe) as cap, capture_probs(wrapper) as bare:
        pages = run_pipe(pipe, pages_for(kind, seed=3))
    for capture in (cap, bare):
        assert not set(capture.keys) & set(BPE_SPECIAL)
    for page in pages:
        words = [w.annotation_id for w in words_of(page)]
        rows = [d.key for d in cap.words(page)]
        assert rows == [w for w in words if w in rows]  # only the page's words, in order
        if stride:
            assert rows == words  # every word has its row
        for word in words_of(page):
            tag = word.sub_categories.get(dd.WordKey.TOKEN_TAG)
            if tag is not None:
                assert cap.get(word).predicted == str(tag.category_name.value)
                assert round(cap.get(word).confidence, 8) == tag.score
    assert sorted(bare.keys) == sorted(cap.keys)
