import threading
import warnings

import numpy as np
import pytest
import torch

from probhook import Capture, Distribution, capture_probs


def encode(tiny, texts):
    tok = tiny.load_tokenizer()
    inputs = tok(texts, padding="max_length", truncation=True, return_tensors="pt")
    if tiny.kind == "layoutlm":
        ids = inputs["input_ids"]
        inputs["bbox"] = torch.randint(0, 1000, (*ids.shape, 2)).repeat(1, 1, 2).sort(-1).values
    return dict(inputs)


TEXTS = [
    "dear sir please find the invoice",
    "total amount due",
    "memo to the team",
    "form name address signature",
    "yours sincerely",
    "payment date customer number",
    "meeting summary note",
    "bank account report",
]


def hook_state(model):
    """Identity and contents (in order) of every hook dict of every module."""
    attrs = (
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_backward_hooks",
    )
    return [
        (name, attr, id(getattr(m, attr)), list(getattr(m, attr).items()))
        for name, m in model.named_modules()
        for attr in attrs
    ]


@pytest.mark.parametrize("kind", ["layoutlm", "bert"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_rows_equal_softmax_of_logits(tiny, kind, batch, temperature):
    t = tiny(kind)
    model = t.load_model()
    inputs = encode(t, TEXTS[:batch])
    with torch.no_grad():
        expected = torch.softmax(model(**inputs).logits / temperature, -1).numpy()
    with capture_probs(model, temperature=temperature) as cap:
        model(**inputs)
    assert cap.probs.shape == (batch, 4)
    np.testing.assert_allclose(cap.probs, expected, atol=1e-6)
    assert cap.labels == t.labels  # from config.id2label
    assert len(cap) == batch
    assert cap.capacity == 10_000
    assert cap.evicted == 0


def test_multi_label_config_uses_sigmoid(tiny):
    t = tiny("bert", multi_label=True)
    model = t.load_model()
    inputs = encode(t, TEXTS[:3])
    with capture_probs(model) as cap:
        logits = model(**inputs).logits.detach()
    np.testing.assert_allclose(cap.probs, torch.sigmoid(logits).numpy(), atol=1e-6)
    with capture_probs(model, activation="none") as raw:
        model(**inputs)
    np.testing.assert_allclose(raw.probs, logits.numpy(), atol=1e-6)


def test_matches_transformers_text_classification_pipeline(tiny):
    from transformers import pipeline

    t = tiny("bert")
    model = t.load_model()
    clf = pipeline("text-classification", model=model, tokenizer=t.load_tokenizer(), top_k=None)
    for text in TEXTS[:4]:
        with capture_probs(model) as cap, cap.key(text):
            scores = clf([text])[0]
        dist = cap.get(text)
        for item in scores:
            assert dist.as_dict()[item["label"]] == pytest.approx(item["score"], abs=1e-6)


def test_distribution_interface(tiny):
    t = tiny("bert")
    model = t.load_model()
    with capture_probs(model) as cap, cap.keys_for(["a", "b"]):
        model(**encode(t, TEXTS[:2]))
    d = cap.get("b")
    assert isinstance(d, Distribution)
    assert d.key == "b"
    assert d.labels == t.labels
    assert d.predicted == t.labels[int(np.argmax(cap.probs[1]))]
    assert d.confidence == pytest.approx(float(cap.probs[1].max()))
    top = d.top_k(2)
    assert [p for _, p in top] == sorted(d.probs.tolist(), reverse=True)[:2]
    assert cap.keys == ["a", "b"]
    assert cap.get("missing") is None


def test_keys_for_must_match_batch(tiny):
    model = tiny("bert").load_model()
    with (
        capture_probs(model) as cap,
        cap.keys_for(["only-one"]),
        pytest.raises(ValueError, match="1 keys"),
    ):
        model(**encode(tiny("bert"), TEXTS[:2]))
    assert not cap.active
    assert len(cap) == 0


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_removed_exactly_also_on_exceptions(tiny, exc):
    model = tiny("layoutlm").load_model()
    model.register_forward_hook(lambda *a: None)  # a user's own hook must survive untouched
    before = hook_state(model)
    with capture_probs(model) as cap:
        assert hook_state(model) != before
    assert hook_state(model) == before
    with pytest.raises(type(exc)), capture_probs(model):
        raise exc
    assert hook_state(model) == before
    assert not cap.active


def test_registration_is_all_or_nothing():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = hook_state(a)
    with pytest.raises(TypeError, match="TorchScript"):
        capture_probs([a, torch.jit.script(b)]).start()
    assert hook_state(a) == before
    cap = capture_probs([a, b], labels={"model0": ["x", "y"], "model1": ["x", "y", "z"]})

    def run_both():
        with cap:
            a(torch.randn(1, 2))
            b(torch.randn(1, 2))

    with pytest.raises(ValueError, match="2 outputs but 3 labels"):
        run_both()
    assert hook_state(a) == before
    assert not cap.active

    class Unhookable(torch.nn.Linear):  # a module that refuses hooks halfway through start()
        def register_forward_hook(self, *args, **kwargs):
            raise RuntimeError("no hooks here")

    failing = capture_probs([a, Unhookable(2, 2)])
    with pytest.raises(RuntimeError, match="no hooks here"):
        failing.start()
    assert hook_state(a) == before
    assert failing.heads == {}
    assert not failing.active


def test_reentry_two_captures_and_nesting(tiny):
    t = tiny("bert")
    model = t.load_model()
    inputs = encode(t, TEXTS[:2])
    cap = capture_probs(model)
    with cap, pytest.raises(RuntimeError, match="already active"):
        cap.start()
    with capture_probs(model) as outer, capture_probs(model) as inner:
        logits = model(**inputs).logits.detach()
    expected = torch.softmax(logits, -1).numpy()
    np.testing.assert_allclose(outer.probs, expected, atol=1e-6)
    np.testing.assert_allclose(inner.probs, expected, atol=1e-6)
    # a head nested inside another selected head is captured once, by the outer one
    with capture_probs(model, heads=["", "classifier"]) as nested:
        model(**inputs)
    assert list(nested.heads) == ["model"]
    assert len(nested) == 2
    np.testing.assert_allclose(nested.probs, expected, atol=1e-6)


def test_threads_keep_their_keys_apart():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    xs = {k: torch.randn(4, 6) for k in ("t0", "t1", "t2", "t3")}
    barrier = threading.Barrier(len(xs))

    def work(key):
        barrier.wait()
        for _ in range(50):
            with cap.key(key):
                model(xs[key])

    with capture_probs(model, capacity=1000) as cap:
        threads = [threading.Thread(target=work, args=(k,)) for k in xs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    keys = np.array(cap.keys)
    for k, x in xs.items():
        mine = cap.probs[keys == k]
        expected = torch.softmax(model(x), -1).detach().numpy()
        assert len(mine) == 200
        np.testing.assert_allclose(mine, np.tile(expected, (50, 1)), atol=1e-6)


def test_decorator_on_function_and_method(tiny):
    t = tiny("bert")
    model = t.load_model()
    inputs = encode(t, TEXTS[:3])

    @capture_probs(model)
    def predict(batch):
        return model(**batch)

    predict(inputs)
    predict(inputs)
    assert len(predict.capture) == 6
    assert not predict.capture.active

    class Service:
        def __init__(self):
            self.model = model

        @capture_probs(target="self.model", capacity=4)
        def run(self, batch):
            return self.model(**batch)

    Service().run(inputs)
    Service().run(inputs)
    assert len(Service.run.capture) == 4
    assert Service.run.capture.evicted == 2

    @capture_probs(target="net")
    def by_param(net, batch):
        return net(**batch)

    by_param(model, inputs)
    assert len(by_param.capture) == 3
    with pytest.raises(TypeError, match="no parameter 'nope'"):
        capture_probs(target="nope")(lambda net: net)


def test_start_stop_by_hand_and_warning_when_nothing_ran():
    model = torch.nn.Linear(3, 2)
    cap = capture_probs(model, labels=["no", "yes"])
    cap.start()
    model(torch.randn(1, 3))
    cap.stop()
    model(torch.randn(1, 3))  # after stop: not captured
    assert len(cap) == 1
    assert cap.labels == ("no", "yes")
    with (
        pytest.warns(RuntimeWarning, match="no forward of model ran inside the capture"),
        capture_probs(model),
    ):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cap.start()
        model(torch.randn(1, 3))
        cap.stop()
    assert len(cap) == 2


def test_several_heads_are_views_and_shortcuts_name_them():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 5)
    with capture_probs([a, b]) as cap:
        a(torch.randn(2, 3))
        b(torch.randn(1, 3))
    assert {n: len(v) for n, v in cap.heads.items()} == {"model0": 2, "model1": 1}
    assert cap.heads["model1"].labels == ("0", "1", "2", "3", "4")
    with pytest.raises(ValueError, match=r"2 heads \(model0, model1\)"):
        _ = cap.probs
    with pytest.raises(ValueError, match="model0, model1"):
        cap.get("x")


def test_totals_are_defined_on_several_heads():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 5)
    with capture_probs([a, b], capacity=3) as cap:
        a(torch.randn(5, 3))
        b(torch.randn(2, 3))
    assert len(cap) == 3 + 2  # rows kept, over all heads
    assert cap.capacity == 3  # per head
    assert cap.evicted == 2
    assert cap.nbytes == sum(v.nbytes for v in cap.heads.values())
    assert "model0: 3 rows" in repr(cap)


def test_heads_selection_by_name_glob_type_predicate(tiny):
    model = tiny("bert").load_model()
    assert list(capture_probs(model, heads="classifier").heads) == []  # views appear on start
    for selector in ("classifier", "class*", torch.nn.Linear, lambda n, m: n == "classifier"):
        cap = capture_probs(model, heads=selector)
        cap.start()
        cap.stop(warn=False)
        if selector is torch.nn.Linear:
            assert "classifier" in cap.heads
            assert len(cap.heads) > 1
        else:
            assert list(cap.heads) == ["classifier"]
    with pytest.raises(ValueError, match=r"nothing matched heads='nope'.*heads='classifier'"):
        capture_probs(model, heads="nope").start()


def test_bad_targets_and_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"nothing matched heads='fc'.*Searched: <root> \(ReLU\)"):
        capture_probs(torch.nn.ReLU(), heads="fc").start()
    with pytest.raises(TypeError, match="TorchScript"):
        capture_probs(torch.jit.script(torch.nn.Linear(2, 2))).start()
    with pytest.raises(TypeError, match="got str"):
        capture_probs(["x"]).start()
    with pytest.raises(ValueError, match="temperature"):
        capture_probs(torch.nn.Linear(2, 2), temperature=0)
    with pytest.raises(ValueError, match="activation"):
        capture_probs(torch.nn.Linear(2, 2), activation="softmin")
    with pytest.raises(ValueError, match="capacity"):
        capture_probs(torch.nn.Linear(2, 2), capacity=0)
    model = torch.nn.Linear(2, 3)
    with (
        pytest.raises(ValueError, match="3 outputs but 2 labels"),
        capture_probs(model, labels=["a", "b"]),
    ):
        model(torch.randn(1, 2))


def test_token_level_logits_are_not_yet_supported():
    model = torch.nn.Linear(4, 3)
    with (
        pytest.raises(
            NotImplementedError, match="not a token-classification head that probhook can map"
        ),
        capture_probs(model),
    ):
        model(torch.randn(2, 5, 4))


def test_torch_compile_is_hooked_from_outside():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(2, 4)
    with capture_probs(compiled) as cap:
        out = compiled(x)
    np.testing.assert_allclose(cap.probs, torch.softmax(out, -1).detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"torch\.compile"):
        capture_probs(compiled, heads="0").start()


def test_dtype_and_keep_logits():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    with capture_probs(model, dtype="float16", keep_logits=True) as cap:
        logits = model(x).detach()
    assert cap.probs.dtype == np.float16
    np.testing.assert_allclose(cap.logits, logits.numpy(), atol=1e-6)
    assert isinstance(cap, Capture)
    assert "model: 5 rows" in repr(cap)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("keep_logits", [False, True])
def test_cuda_model_rows_match_softmax(tiny, dtype, keep_logits):
    t = tiny("bert")
    model = t.load_model().to("cuda", dtype)
    inputs = {k: v.to("cuda") for k, v in encode(t, TEXTS[:3]).items()}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    with capture_probs(model, keep_logits=keep_logits) as cap:
        for i in range(3):  # single rows: the queued path unless logits are kept
            with cap.key(f"text-{i}"):
                model(**{k: v[i : i + 1] for k, v in inputs.items()})
        with cap.key(["a", "b", "c"]):
            model(**inputs)  # a batch
    expected = torch.softmax(logits, -1).cpu().numpy()
    np.testing.assert_allclose(cap.probs, np.concatenate([expected, expected]), atol=2e-2)
    assert cap.keys == ["text-0", "text-1", "text-2", "a", "b", "c"]
    if keep_logits:
        np.testing.assert_allclose(cap.logits[3:], logits.cpu().numpy(), atol=1e-5)


def test_a_capture_without_target_says_so_at_start():
    with pytest.raises(TypeError, match="no target: pass the model"):
        capture_probs().start()
