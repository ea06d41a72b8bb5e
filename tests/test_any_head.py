"""Any module whose output is (batch, classes) floating logits is a head, whatever its layers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probhook import capture_probs

torchvision = pytest.importorskip("torchvision")


def rows_match(cap, logits):
    expected = torch.softmax(logits.detach().float(), -1).numpy()
    np.testing.assert_allclose(cap.probs, expected, atol=1e-6)


def test_squeezenet_conv2d_head():
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    cap = capture_probs(model, labels=["a", "b", "c", "d"])
    with cap, torch.no_grad(), cap.keys_for(["img-0", "img-1"]):
        out = model(x)
    assert out.shape == (2, 4)
    assert list(cap.heads) == ["model"]
    assert cap.keys == ["img-0", "img-1"]
    rows_match(cap, out)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_dynamically_quantized_model():
    torch.manual_seed(0)
    layers = (torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    float_model = torch.nn.Sequential(*layers)
    model = torch.ao.quantization.quantize_dynamic(float_model, {torch.nn.Linear}, torch.qint8)
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    x = torch.randn(5, 8)
    with capture_probs(model) as cap:
        out = model(x)
    assert len(cap) == 5
    rows_match(cap, out)


class FunctionalHead(torch.nn.Module):
    """A classifier whose head is F.linear over its own weight: no nn.Linear anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 6))
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return F.linear(torch.tanh(x), self.weight, self.bias)


def test_functional_head():
    torch.manual_seed(1)
    model = FunctionalHead()
    x = torch.randn(4, 6)
    with capture_probs(model, labels=["x", "y", "z"]) as cap:
        out = model(x)
    assert cap.labels == ("x", "y", "z")
    rows_match(cap, out)


@pytest.mark.parametrize(
    ("module", "x", "error", "message"),
    [
        (torch.nn.ReLU(), torch.randn(4), ValueError, r"shape \(4,\); expected \(batch, classes\)"),
        (
            torch.nn.Conv2d(3, 2, 3),
            torch.randn(1, 3, 8, 8),
            ValueError,
            r"shape \(1, 2, 6, 6\); expected \(batch, classes\)",
        ),
        (torch.nn.Identity(), torch.ones(2, 3, dtype=torch.long), TypeError, "not floating"),
    ],
)
def test_output_that_is_not_logits_is_refused_at_the_first_forward(module, x, error, message):
    cap = capture_probs(module)
    cap.start()  # nothing is guessed from the layers: the output decides
    try:
        with pytest.raises(error, match=message):
            module(x)
    finally:
        cap.stop(warn=False)
    assert len(cap) == 0


class DictHead(torch.nn.Module):
    """A head returning a plain dict, as some research code does."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 3)

    def forward(self, x):
        return {"features": x, "logits": self.linear(x)}


def test_a_head_returning_a_dict_is_read_by_key():
    torch.manual_seed(0)
    model = DictHead()
    x = torch.randn(4, 8)
    for options in ({"output": "logits"}, {}):  # named, and found by its usual name
        with capture_probs(model, **options) as cap:
            out = model(x)
        rows_match(cap, out["logits"])
    missing = r"returned a dict of \{'features': .*'logits'.*which has no output='scores'"
    with pytest.raises(TypeError, match=missing), capture_probs(model, output="scores"):
        model(x)


def test_a_model_on_the_meta_device_is_refused_at_start():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    cap = capture_probs(model)
    with pytest.raises(ValueError, match=r"tensors on the meta device \(first: '0.weight'\)"):
        cap.start()
    assert not model[0]._forward_hooks  # nothing was hooked
