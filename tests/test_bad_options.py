"""Options that are wrong by type fail when the capture is created, with a message naming the
option, not later inside a forward or with a Python internals error."""

from __future__ import annotations

import pytest
import torch

from probhook import capture_probs


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"capacity": None}, ValueError, r"capacity must be a positive int, got None"),
        ({"labels": {"model": 3}}, TypeError, r"labels must be a list of names"),
        ({"labels": 3}, TypeError, r"labels must be a list of names"),
        ({"heads": 123}, TypeError, r"heads= entries must be .* got 123"),
        ({"heads": ["classifier", 1.5]}, TypeError, r"heads= entries must be .* got 1\.5"),
    ],
)
def test_wrongly_typed_options_fail_at_creation(options, error, message):
    model = torch.nn.Linear(4, 3)
    with pytest.raises(error, match=message):
        capture_probs(model, **options)
    assert not model._forward_hooks  # nothing was registered


def test_one_module_given_twice_is_refused_at_start_with_nothing_registered():
    model = torch.nn.Linear(4, 3)
    cap = capture_probs([model, model])
    with pytest.raises(ValueError, match=r"the same module is given twice"):
        cap.start()
    assert not model._forward_hooks
