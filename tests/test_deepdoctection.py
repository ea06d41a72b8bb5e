import random

import numpy as np
import pytest

from probhook import capture_probs
from probhook.integrations.deepdoctection.adapter import page_offset
from probhook.testing import MODEL_KINDS, make_pages, make_pipe, run_pipe

dd = pytest.importorskip("deepdoctection")


def stored(page):
    """deepdoctection's own result for a page or image: (label, score to 8 decimals) or None
    (0.46 stores the float32 score unrounded, 1.x rounds it to 8 decimals)."""
    try:
        result = page.summary.get_sub_category("document_type")
    except KeyError:
        return None
    return str(result.category_name.value), round(result.score, 8)


@pytest.fixture(scope="module")
def pipes(tiny):
    return {kind: make_pipe(tiny(kind)) for kind in MODEL_KINDS}


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_distribution_matches_deepdoctection_for_every_page(pipes, tiny, kind):
    pipe = pipes[kind]
    pages_in = make_pages(
        12, n_documents=3, empty_pages=[5], seed=1, with_pixels=kind == "layoutlmv3"
    )
    random.Random(7).shuffle(pages_in)
    with capture_probs(pipe) as cap:
        pages = run_pipe(pipe, pages_in)
    assert cap.labels == tiny(kind).labels
    np.testing.assert_allclose(cap.probs.sum(axis=1), 1.0, atol=1e-5)
    for page in pages:
        result = stored(page)
        dist = cap.get(page)
        if result is None:  # no words: no forward, no row, never another page's row
            assert kind != "bert"
            assert dist is None
            continue
        label, score = result
        assert dist.key == page.image_id
        assert dist.predicted == label
        assert round(dist.confidence, 8) == pytest.approx(score, abs=0, rel=0)
        assert dist.meta["document_id"] == page.document_id
        assert dist.meta["page_number"] == page.page_number + page_offset(dd.__version__)
        assert dist.meta["file_name"] == page.file_name
    # rows follow processing order, one per served page with words
    served = [p.image_id for p in pages if stored(p) is not None]
    assert cap.keys == served
    assert cap.column("image_id").tolist() == served
    if kind == "bert":  # text-only path runs on an empty page too; that row is its own
        assert len(cap) == 12
    else:
        assert len(cap) == 11


def test_pipeline_component_and_wrapper_targets(pipes):
    pipe = pipes["layoutlm"]
    component = pipe.pipe_component_list[0]
    with capture_probs(component) as by_component:
        pages = run_pipe(pipe, make_pages(3))
    assert by_component.keys == [p.image_id for p in pages]
    with capture_probs(component.language_model) as by_wrapper:
        pages = run_pipe(pipe, make_pages(3))
    assert len(by_wrapper) == 3
    assert by_wrapper.keys == [p.image_id for p in pages]  # attributed by its own input
    assert by_wrapper.labels == ("letter", "form", "invoice", "memo")


def test_by_document_groups_pages_and_averages(pipes):
    pipe = pipes["lilt"]
    with capture_probs(pipe) as cap:
        pages = run_pipe(pipe, make_pages(6, n_documents=2, seed=3))
    docs = cap.by_document()
    assert set(docs) == {"doc-0", "doc-1"}
    for doc_id, doc in docs.items():
        mine = [p for p in pages if p.document_id == doc_id]
        assert [d.meta["page_number"] for d in doc.pages] == [1, 2, 3]
        expected = np.mean([cap.get(p).probs for p in mine], axis=0)
        np.testing.assert_allclose(doc.mean.probs, expected, atol=1e-7)


def test_ring_buffer_keeps_last_capacity_pages(pipes):
    pipe = pipes["layoutlm"]
    with capture_probs(pipe, capacity=4) as cap:
        pages = run_pipe(pipe, make_pages(12, seed=4))
    assert len(cap) == 4
    assert cap.evicted == 8
    assert cap.keys == [p.image_id for p in pages[-4:]]
    assert cap.get(pages[0]) is None


def state_of(obj):
    return {k: id(v) for k, v in vars(obj).items()}


def test_objects_and_classes_unchanged_after_block_also_on_error(pipes):
    pipe = pipes["layoutlm"]
    run_pipe(pipe, make_pages(1))  # analyze() switches timers on at first use
    component = pipe.pipe_component_list[0]
    model = component.language_model.model
    objects = [pipe, component, component.language_model, model]
    before = [state_of(o) for o in objects]
    class_dicts = {cls: dict(vars(cls)) for o in objects for cls in type(o).__mro__}
    hooks = [(id(m._forward_hooks), list(m._forward_hooks)) for m in model.modules()]
    with capture_probs(pipe):
        run_pipe(pipe, make_pages(2))
        assert "serve" in vars(component)

    def run_and_fail():
        with capture_probs(pipe):
            run_pipe(pipe, make_pages(1))
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        run_and_fail()
    assert [state_of(o) for o in objects] == before
    assert {cls: dict(vars(cls)) for cls in class_dicts} == class_dicts
    assert [(id(m._forward_hooks), list(m._forward_hooks)) for m in model.modules()] == hooks


def test_lazy_dataflow_consumed_after_block_warns(pipes):
    pipe = pipes["layoutlm"]
    with pytest.warns(RuntimeWarning, match="no page was served"), capture_probs(pipe) as cap:
        flow = pipe.analyze(dataset_dataflow=dd.DataFromList(make_pages(2), shuffle=False))
    flow.reset_state()
    assert len(list(flow)) == 2
    assert len(cap) == 0


def test_swapped_model_is_followed(pipes, tiny):
    pipe = make_pipe(tiny("layoutlm"))
    component = pipe.pipe_component_list[0]
    pages = make_pages(4, seed=5)  # distinct pages (image ids derive from file names)
    with capture_probs(pipe) as cap:
        first = run_pipe(pipe, pages[:2])
        component.language_model.model = tiny("layoutlm", seed=1).load_model()
        second = run_pipe(pipe, pages[2:])
    for page in first + second:
        label, score = stored(page)
        assert cap.get(page).predicted == label
        assert round(cap.get(page).confidence, 8) == score


def test_two_classifiers_are_two_heads(tiny):
    # (a text-only classifier after a LayoutLM one crashes inside dd-core 1.4: page.image_orig)
    pipe = make_pipe(tiny("layoutlm"), tiny("lilt"))
    with capture_probs(pipe) as cap:
        pages = run_pipe(pipe, make_pages(3, seed=8))
    assert len(cap.heads) == 2
    first, second = cap.heads.values()
    assert first.keys == second.keys == [p.image_id for p in pages]
    for page in pages:  # deepdoctection keeps the first classifier's result
        assert first.get(page).predicted == stored(page)[0]
    with pytest.raises(ValueError, match="2 heads"):
        cap.get(pages[0])


def test_pipe_without_classifier_is_a_clear_error():
    pipe = dd.DoctectionPipe(pipeline_component_list=[])
    with pytest.raises(ValueError, match="found no LM sequence classifier"):
        capture_probs(pipe).start()


def test_canonical_get_dd_analyzer_path(tiny):
    from probhook.testing import analyzer_overrides, register_analyzer_model

    profile = register_analyzer_model(tiny("layoutlm"))
    analyzer = dd.get_dd_analyzer(config_overwrite=analyzer_overrides(profile))
    with capture_probs(analyzer) as cap:
        pages = run_pipe(analyzer, make_pages(5, n_documents=2, seed=9))
    assert cap.keys == [p.image_id for p in pages]
    for page in pages:
        label, score = stored(page)
        assert cap.get(page).predicted == label
        assert round(cap.get(page).confidence, 8) == score


def test_filtered_and_default_category_pages_get_no_row(tiny):
    pipe = make_pipe(tiny("layoutlm"))
    component = pipe.pipe_component_list[0]
    pages_in = make_pages(4, seed=11)
    skipped = pages_in[1].image_id
    component.set_inbound_filter(lambda dp: dp.image_id == skipped)
    with capture_probs(pipe) as cap:
        pages = run_pipe(pipe, pages_in)
    assert cap.get(skipped) is None
    assert len(cap) == 3
    assert [k for k in cap.keys] == [p.image_id for p in pages if p.image_id != skipped]

    component.set_inbound_filter(lambda dp: False)
    component.use_other_as_default_category = True  # empty pages get "other" without a forward
    with capture_probs(pipe) as cap:
        pages = run_pipe(pipe, make_pages(3, empty_pages=[0], seed=12))
    assert cap.get(pages[0]) is None
    assert len(cap) == 2


def test_rows_of_a_page_whose_serve_failed_after_the_model_ran_say_so(tiny):
    """deepdoctection's sequence service crashes after the forward when it returns overflowing
    tokens (several rows for one page): those rows are marked with the error."""
    from probhook.testing import make_token_pages, wrapper_for

    model = tiny("layoutlm", max_length=32)
    service = dd.LMSequenceClassifierService(
        model.load_tokenizer(), wrapper_for(model), return_overflowing_tokens=True
    )
    pipe = dd.DoctectionPipe(pipeline_component_list=[service])
    pages = make_token_pages(2, words_per_page=60)
    with capture_probs(pipe) as cap, pytest.raises(TypeError):
        run_pipe(pipe, pages)
    assert len(cap) > 1  # the long page's windows ran
    assert set(cap.column("page_error")) == {"TypeError: 'int' object is not iterable"}
    ok = make_pipe(model)
    with capture_probs(ok) as fine:
        run_pipe(ok, make_pages(2))
    assert fine.column("page_error").tolist() == [None, None]
