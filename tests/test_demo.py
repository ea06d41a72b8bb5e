"""The shipped demo classifier: accurate on held-out synthetic documents, hedging on mixed ones."""

import random

import numpy as np
import pytest
import torch
from transformers import LayoutLMForSequenceClassification

from probhook import capture_probs, demo
from probhook.demo.synth import AMBIGUOUS_KINDS, LABELS, ambiguous, generate_set, words_and_boxes


@pytest.fixture(scope="module")
def model():
    return LayoutLMForSequenceClassification.from_pretrained(demo.MODEL_DIR).eval()


def predict(model, docs):
    with capture_probs(model) as cap, torch.no_grad():
        model(**demo.encode(docs, demo.load_tokenizer()))
    return cap


def test_model_is_small_and_labelled():
    size = sum(f.stat().st_size for f in demo.MODEL_DIR.iterdir())
    assert size < 5_000_000
    assert LayoutLMForSequenceClassification.config_class.from_pretrained(
        demo.MODEL_DIR
    ).id2label == dict(enumerate(LABELS))


def test_held_out_accuracy_with_another_seed(model):
    docs = generate_set(400, seed=99)
    cap = predict(model, docs)
    accuracy = np.mean(
        [cap.labels[i] == d.label for i, d in zip(cap.probs.argmax(1), docs, strict=True)]
    )
    print(f"held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.9


def test_ambiguous_documents_get_lower_confidence(model):
    rng = random.Random(2024)
    clear = generate_set(200, seed=7)
    mixed = [ambiguous(kind, rng) for kind in AMBIGUOUS_KINDS for _ in range(40)]
    clear_conf = predict(model, clear).confidence().mean()
    mixed_conf = predict(model, mixed).confidence().mean()
    print(f"mean max-probability: clear {clear_conf:.3f}, ambiguous {mixed_conf:.3f}")
    assert clear_conf > 0.95
    assert mixed_conf < clear_conf - 0.1


def test_training_features_match_what_deepdoctection_extracts(model):
    """The words the model was trained on are the words dd-core's PDF path yields."""
    from probhook.integrations.deepdoctection.analyzer import build_analyzer, read_model_dir
    from probhook.testing import offline_environment

    offline_environment()
    wrapper, labels = read_model_dir(demo.MODEL_DIR)
    analyzer = build_analyzer(demo.MODEL_DIR, wrapper, labels, ocr=False)
    flow = analyzer.analyze(path=str(demo.SAMPLES_DIR / "invoice_1.pdf"))
    flow.reset_state()
    page = next(iter(flow))
    extracted = [w.characters for w in page.words]
    assert "Invoice" in " ".join(extracted) or "INVOICE" in " ".join(extracted)
    assert len(extracted) > 40
    assert words_and_boxes is not None
