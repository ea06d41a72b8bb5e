"""Hugging Face pipelines on tiny offline models: one row per input, keyed by its position in
the call, equal to the pipeline's own ``top_k=None`` scores."""

import numpy as np
import pytest

from probhook import capture_probs
from probhook.integrations import ModuleAdapter, adapter_for

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TEXTS = ["dear sir invoice total", "memo to the team", "please fill the form", "regards yours"]


@pytest.fixture(scope="module")
def text_pipe(tiny):
    t = tiny("bert")
    return transformers.pipeline("text-classification", model=str(t.path), tokenizer=str(t.path))


def expected_rows(pipe, inputs, **kwargs):
    """The pipeline's own scores, in label order, one row per input."""
    labels = [pipe.model.config.id2label[i] for i in range(pipe.model.config.num_labels)]
    out = pipe(inputs, top_k=None, **kwargs)
    return np.array(
        [[{d["label"]: d["score"] for d in row}[label] for label in labels] for row in out]
    )


def test_text_pipeline_rows_keyed_by_position_equal_top_k_none(text_pipe, tiny):
    expected = expected_rows(text_pipe, TEXTS)
    with capture_probs(text_pipe) as cap:
        text_pipe(TEXTS)
        text_pipe(TEXTS[2])  # a second call: positions restart, the call column counts
    assert list(cap.heads) == ["text-classification"]
    assert cap.labels == tiny("bert").labels
    assert cap.keys == [0, 1, 2, 3, 0]
    assert cap.column("call").tolist() == [0, 0, 0, 0, 1]
    np.testing.assert_allclose(cap.probs[:4], expected, atol=1e-6)
    np.testing.assert_allclose(cap.probs[4], expected[2], atol=1e-6)
    assert cap.get(1).predicted == tiny("bert").labels[int(expected[1].argmax())]
    assert "_sanitize_parameters" not in vars(text_pipe)
    assert "forward" not in vars(text_pipe)


def test_batched_and_key_dataset_inputs_keep_their_index(text_pipe):
    from transformers.pipelines.pt_utils import KeyDataset

    expected = expected_rows(text_pipe, TEXTS)
    with capture_probs(text_pipe) as cap:
        text_pipe(TEXTS, batch_size=3)  # forwards of 3 and 1 rows
        data = [{"text": t} for t in TEXTS]
        out = list(text_pipe(KeyDataset(data, "text")))  # a lazy iterator, consumed here
    assert len(out) == 4
    assert cap.keys == [0, 1, 2, 3, 0, 1, 2, 3]
    assert cap.column("call").tolist() == [0] * 4 + [1] * 4
    np.testing.assert_allclose(cap.probs, np.concatenate([expected, expected]), atol=1e-5)


def test_function_to_apply_follows_the_pipeline(tiny):
    t = tiny("bert", multi_label=True)
    multi = transformers.pipeline("text-classification", model=str(t.path), tokenizer=str(t.path))
    expected = expected_rows(multi, TEXTS[:2])
    with capture_probs(multi) as cap:
        multi(TEXTS[:2])
    np.testing.assert_allclose(cap.probs, expected, atol=1e-6)  # sigmoid: rows need not sum to 1
    assert not np.allclose(cap.probs.sum(axis=1), 1.0)

    raw = transformers.pipeline(
        "text-classification", model=str(t.path), tokenizer=str(t.path), function_to_apply="none"
    )
    expected = expected_rows(raw, TEXTS[:2])
    with capture_probs(raw) as cap:
        raw(TEXTS[:2])
    np.testing.assert_allclose(cap.probs, expected, atol=1e-5)  # the logits themselves
    differs = "function_to_apply='softmax' differs"
    with pytest.raises(ValueError, match=differs), capture_probs(raw):
        raw(TEXTS[0], function_to_apply="softmax")


@pytest.fixture(scope="module")
def image_pipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit")
    labels = ["letter", "invoice", "form"]
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3, id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(path)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(path)
    return transformers.pipeline("image-classification", model=str(path))


def test_image_pipeline_document_images(image_pipe):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)) for _ in range(3)]
    expected = expected_rows(image_pipe, images)
    with capture_probs(image_pipe) as cap:
        image_pipe(images)
    assert cap.labels == ("letter", "invoice", "form")
    assert cap.keys == [0, 1, 2]
    np.testing.assert_allclose(cap.probs, expected, atol=1e-6)


def test_list_of_pipelines_and_plain_models(text_pipe, image_pipe):
    from PIL import Image

    with capture_probs([text_pipe, image_pipe]) as cap:
        text_pipe(TEXTS[:2])
        image_pipe(Image.new("RGB", (32, 32)))
    assert {n: len(v) for n, v in cap.heads.items()} == {
        "text-classification": 2,
        "image-classification": 1,
    }
    # a transformers *model* is a plain module: its rows carry the keys the user gives
    model = text_pipe.model
    assert type(adapter_for(model)) is ModuleAdapter
    with capture_probs(model) as plain:
        text_pipe(TEXTS[0])
    assert plain.keys == [None]


def test_a_pipeline_of_another_task_is_refused_clearly(tiny, tmp_path):
    t = tiny("bert")
    config = transformers.BertConfig.from_pretrained(t.path)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    fill = transformers.pipeline("fill-mask", model=str(tmp_path), tokenizer=str(t.path))
    with pytest.raises(NotImplementedError, match="'fill-mask' pipeline"):
        capture_probs(fill).start()
    assert "forward" not in vars(fill)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_token_classification_pipeline_rows_equal_the_pipelines_token_scores(tmp_path, batch_size):
    from probhook.testing import build_token_model

    t = build_token_model("bert", tmp_path / "tokens")
    pipe = transformers.pipeline("token-classification", model=str(t.path), tokenizer=str(t.path))
    texts = ["dear sir please fill the form", "total amount due", "memo to team"]
    with capture_probs(pipe) as cap:
        out = pipe(texts, ignore_labels=[], batch_size=batch_size)  # every token, "O" too
    assert cap.labels == t.labels
    for i, entities in enumerate(out):
        assert entities, "the pipeline scored the tokens of every input"
        for entity in entities:
            dist = cap.get((i, entity["index"]))
            assert dist.predicted == entity["entity"]
            assert dist.confidence == pytest.approx(entity["score"], abs=1e-6)
            assert dist.meta["token_index"] == entity["index"]
    scored = sum(len(e) for e in out)
    assert len(cap) == scored  # one row per scored token: no special or padding token
    assert set(cap.column("call").tolist()) == {0}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_strided_token_pipeline_keys_chunks_by_their_input(tmp_path, batch_size):
    """``stride=`` splits a long input into overlapping chunks: each chunk's rows keep the input's
    position and the token's index in the whole input, and every entity the pipeline returns
    is made of rows of one chunk, with the entity's score."""
    from probhook.testing import build_token_model

    t = build_token_model("bert", tmp_path / "tokens", max_length=16)
    pipe = transformers.pipeline("token-classification", model=str(t.path), tokenizer=str(t.path))
    long = "dear sir please fill the form and the total amount due to the team memo regards " * 2
    texts = [long, "total amount due", "memo to team please fill the form total amount due"]
    with capture_probs(pipe) as cap:
        out = pipe(texts, stride=4, aggregation_strategy="simple", ignore_labels=[],
                   batch_size=batch_size)  # fmt: skip
    rows = list(cap.distributions())
    assert {d.key[0] for d in rows} == {0, 1, 2}  # three inputs, however many chunks
    assert max(d.meta["chunk"] for d in rows if d.key[0] == 0) >= 2  # the long one was split
    for i, text in enumerate(texts):
        whole = pipe.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        mine = [d for d in rows if d.key[0] == i]
        # the index in the input: the token at that index of the unsplit input, in every chunk
        assert all(d.key[1] == d.meta["token_index"] for d in mine)
        assert all((d.meta["start"], d.meta["end"]) == tuple(whole[d.key[1]]) for d in mine)
        assert {d.key[1] for d in mine} == set(range(1, len(whole) - 1))  # every token
        for entity in out[i]:
            found = False
            for chunk in {d.meta["chunk"] for d in mine}:
                tokens = [d for d in mine if d.meta["chunk"] == chunk
                          and entity["start"] <= d.meta["start"] < entity["end"]]  # fmt: skip
                if tokens and all(d.predicted.endswith(entity["entity_group"]) for d in tokens):
                    score = np.mean([d.confidence for d in tokens])
                    found = found or abs(score - entity["score"]) < 1e-6
            assert found, (i, entity)
