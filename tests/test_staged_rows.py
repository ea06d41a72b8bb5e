"""A token head's forwards are checked in the hook and mapped later, several together: every
read, flush and stop still sees every row, and the rows are those of the forward as it was."""

import time

import numpy as np
import pytest
import torch

from probhook import capture_probs, load
from probhook.hooks import STAGED_FORWARDS
from probhook.testing import build_token_model, make_token_pages, make_token_pipe, run_pipe

pytest.importorskip("deepdoctection")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_token_model("layoutlm", tmp_path_factory.mktemp("staged") / "m")


def test_every_read_sees_the_staged_forwards(tiny):
    pipe = make_token_pipe(tiny)
    pages = make_token_pages(STAGED_FORWARDS + 3, words_per_page=10, shuffle=False, seed=1)
    with capture_probs(pipe) as cap:
        for n, page in enumerate(pages, start=1):
            run_pipe(pipe, [page])
            assert len(cap) == 10 * n  # each read maps what waits
    seqs = cap.to_pandas()["seq"].tolist()
    assert seqs == sorted(seqs)  # numbered in forward order within the head


def test_staged_rows_reach_the_sink_without_a_read(tiny, tmp_path):
    pipe = make_token_pipe(tiny)
    path = tmp_path / "words.arrows"
    with capture_probs(pipe, sink=path, flush_seconds=0.2):
        run_pipe(pipe, make_token_pages(3, words_per_page=10, seed=2))  # fewer than staged
        time.sleep(1.0)  # the flush thread maps and writes them
        assert len(load(path)) == 30  # read from the file: the capture is not asked


def test_rows_are_those_of_the_output_as_the_model_returned_it(tiny):
    model, tokenizer = tiny.load_model(), tiny.load_tokenizer()
    enc = tokenizer([["total", "qzv", "amount"]], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model(**enc).logits, -1)[0, 1:-1].numpy()
    with capture_probs(model) as cap, torch.no_grad():
        model(**enc)  # the first forward is mapped at once; the next ones are staged
        # a later hook changes the output in place, as a caller may after the forward returns
        handle = model.register_forward_hook(lambda m, a, out: out.logits.zero_())
        model(**enc)
        handle.remove()
    rows = cap.probs.reshape(2, -1, expected.shape[-1])
    np.testing.assert_allclose(rows[1][1:-1], expected, atol=1e-7, rtol=0)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_token_service_clones_in_threads_are_one_head_exact_per_word(tiny):
    import deepdoctection as dd

    service = make_token_pipe(tiny, sliding_window_stride=16).pipe_component_list[0]
    clones = [service, service.clone(), service.clone()]
    multi = dd.MultiThreadPipelineComponent(pipeline_components=clones, pre_proc_func=None)
    pages = make_token_pages(12, words_per_page=(40, 90), seed=5)
    with capture_probs(multi) as cap:
        multi.put_task(pages)
        images = multi.start()
    assert len(cap.heads) == 1
    words = [(p, w) for p in images for w in p.get_annotation(category_names=dd.LayoutLabel.WORD)]
    assert len(cap) == len(words)
    n_tagged = 0
    for page, word in words:
        dist, tag = cap.get(word), word.sub_categories.get(dd.WordKey.TOKEN_TAG)
        assert dist.meta["image_id"] == page.image_id  # whichever thread served the page
        if tag is not None:
            n_tagged += 1
            assert dist.predicted == str(tag.category_name.value)
            assert round(dist.confidence, 8) == tag.score
    assert n_tagged > len(words) // 2
    for clone in clones:  # every instance patch is gone
        assert "serve" not in vars(clone)
        assert "predict" not in vars(clone.language_model)
