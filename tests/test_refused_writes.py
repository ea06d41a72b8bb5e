"""Rows written while earlier rows cannot reach the sink, rows the flush thread writes once the
sink recovers, and on_overflow="error" on a token head."""

import time

import numpy as np
import pytest
import torch

from probhook import capture_probs
from probhook.buffer import BufferFullError
from probhook.sink import SinkError
from probhook.testing import (
    CollectingSink,
    build_token_model,
    make_token_pages,
    make_token_pipe,
    run_pipe,
)

pytest.importorskip("deepdoctection")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_token_model("layoutlm", tmp_path_factory.mktemp("refused") / "m")


def test_a_batch_forward_keeps_its_rows_when_queued_rows_cannot_be_written():
    sink = CollectingSink()
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=sink, flush_seconds=60)
    cap.start()
    model(torch.randn(1, 4))  # the head's first row is written at once
    sink.failing = True
    for _ in range(3):
        model(torch.randn(1, 4))  # queued
    with pytest.raises(SinkError, match="No space left"):
        model(torch.randn(5, 4))  # storing the queue first fails: this batch must be kept
    sink.failing = False
    cap.close()
    assert len(cap) == 9
    assert sorted(sink.seq) == list(range(9))  # every row once


def test_a_token_heads_first_forward_keeps_its_rows_when_queued_rows_cannot_be_written(tmp_path):
    a = build_token_model("layoutlm", tmp_path / "a")
    b = build_token_model("bert", tmp_path / "b")
    model_a, model_b, tokenizer = a.load_model(), b.load_model(), a.load_tokenizer()
    enc = tokenizer([["total", "qzv", "amount"]], is_split_into_words=True, return_tensors="pt")
    sink = CollectingSink()
    cap = capture_probs([model_a, model_b], sink=sink, flush_seconds=60)
    cap.start()
    with torch.no_grad(), cap.tokens(enc):
        model_a(**enc)  # A's first forward: mapped and written at once
        sink.failing = True
        model_a(**enc)  # staged
        with pytest.raises(SinkError, match="No space left"):
            model_b(**enc)  # B's first forward is mapped at once, after A's staged rows
    sink.failing = False
    cap.close()
    assert {name: len(view) for name, view in cap.heads.items()} == {"model0": 6, "model1": 3}
    assert sorted(sink.seq) == list(range(9))


def test_on_overflow_error_refuses_the_token_forward_that_overflows(tiny):
    pipe = make_token_pipe(tiny)
    pages = make_token_pages(6, words_per_page=10, seed=1)
    cap = capture_probs(pipe, capacity=25, on_overflow="error")
    cap.start()
    run_pipe(pipe, pages[:2])  # 20 rows
    with pytest.raises(BufferFullError):
        run_pipe(pipe, pages[2:3])  # 10 more do not fit: the forward that brings them fails
    assert len(cap) == 20  # a read does not raise the forward's error later
    cap.close()
    assert len(cap) == 20
    np.testing.assert_array_equal(cap.probs.sum(axis=1).round(5), np.ones(20))


def test_rows_a_sink_refused_reach_it_on_the_next_flush_without_another_forward():
    sink = CollectingSink()
    model = torch.nn.Linear(4, 3)
    cap = capture_probs(model, sink=sink, flush_seconds=0.1)
    cap.start()
    model(torch.randn(1, 4))  # written at once
    sink.failing = True
    with pytest.raises(SinkError):
        model(torch.randn(5, 4))  # a batch: refused, held by its buffer
    sink.failing = False
    time.sleep(0.6)  # no forward, no read: the flush thread writes what was refused
    assert sorted(sink.seq) == list(range(6))
    cap.close()
    assert sorted(sink.seq) == list(range(6))
