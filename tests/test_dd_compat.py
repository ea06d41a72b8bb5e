"""deepdoctection targets beyond one pipe: multi-threaded components, lists, skipped pages,
page numbers, on every supported deepdoctection version (``nox -s compat``)."""

import warnings

import pytest

from probhook import capture_probs
from probhook.integrations.deepdoctection.adapter import page_offset
from probhook.testing import make_pages, make_pipe, make_service, run_pipe

dd = pytest.importorskip("deepdoctection")


def stored(image):
    """deepdoctection's own (label, score to 8 decimals) for a page or image, or None."""
    try:
        result = image.summary.get_sub_category("document_type")
    except KeyError:
        return None
    return str(result.category_name.value), round(result.score, 8)


def assert_exact(cap, images):
    """Every image deepdoctection classified has its own row, argmax and 8-dp score equal."""
    for image in images:
        dist, result = cap.get(image.image_id), stored(image)
        if result is None:
            assert dist is None
            continue
        assert dist.key == image.image_id
        assert (dist.predicted, round(dist.confidence, 8)) == result
        assert dist.meta["document_id"] == image.document_id
        assert dist.meta["page_number"] == image.page_number + page_offset(dd.__version__)


def multi_threaded(tiny, n_clones=3):
    service = make_service(tiny("layoutlm"))
    clones = [service] + [service.clone() for _ in range(n_clones - 1)]
    return dd.MultiThreadPipelineComponent(pipeline_components=clones, pre_proc_func=None)


def test_multithread_component_is_one_head_exact_per_page(tiny):
    multi = multi_threaded(tiny)
    models = {id(c.language_model.model) for c in multi.pipe_components}
    assert len(models) == 3  # clone() reloads weights: three modules to hook
    pages = make_pages(18, n_documents=3, empty_pages=[4], seed=21)
    with capture_probs(multi) as cap:
        multi.put_task(pages)
        images = multi.start()
    assert len(cap.heads) == 1
    assert len(images) == 18
    assert len(cap) == 17  # the page without words got no forward and no row
    assert sorted(cap.keys) == sorted(p.image_id for p in images if stored(p) is not None)
    assert_exact(cap, images)
    for clone in multi.pipe_components:  # every instance patch is gone
        assert "serve" not in vars(clone)
        assert not clone.language_model.model._forward_hooks


def test_multithread_component_inside_a_pipe_and_in_a_list(tiny):
    multi = multi_threaded(tiny, n_clones=2)
    pipe = dd.DoctectionPipe(pipeline_component_list=[multi])
    single = make_pipe(tiny("lilt"))
    with capture_probs([pipe, single]) as cap:
        multi.put_task(make_pages(6, seed=22))
        images = multi.start()
        pages = run_pipe(single, make_pages(4, seed=23))
    assert len(cap.heads) == 2
    by_multi, by_single = cap.heads.values()
    assert len(by_multi) == 6
    assert len(by_single) == 4
    assert_exact(by_multi, images)
    assert_exact(by_single, pages)


def test_list_of_services_and_wrappers(tiny):
    first, second = make_pipe(tiny("layoutlm")), make_pipe(tiny("layoutlm", seed=3))
    a, b = first.pipe_component_list[0], second.pipe_component_list[0]
    with capture_probs([a, b]) as cap:
        pages_a = run_pipe(first, make_pages(3, seed=24))
        pages_b = run_pipe(second, make_pages(3, seed=25))
    assert len(cap.heads) == 2
    head_a, head_b = cap.heads.values()
    assert_exact(head_a, pages_a)
    assert_exact(head_b, pages_b)
    with capture_probs([a.language_model, b]) as mixed:
        first_pages = run_pipe(first, make_pages(2, seed=26))
        pages = run_pipe(second, make_pages(2, seed=27))
    wrapper_head, service_head = mixed.heads.values()
    assert wrapper_head.keys == [p.image_id for p in first_pages]  # from the wrapper's input
    assert_exact(service_head, pages)
    with pytest.raises(TypeError, match="list of these"):
        capture_probs([a, object()]).start()


def test_pages_skipped_on_purpose_are_named_in_the_warning(tiny):
    pipe = make_pipe(tiny("layoutlm"))
    served = r"3 pages were served to .* but none reached the model"
    with pytest.warns(RuntimeWarning, match=served), capture_probs(pipe) as cap:
        pages = run_pipe(pipe, make_pages(3, empty_pages=[0, 1, 2], seed=28))
    assert len(pages) == 3
    assert len(cap) == 0
    assert len(cap.to_pandas()) == 0
    assert "page_number" in cap.to_pandas().columns  # an empty table keeps the page columns
    with pytest.warns(RuntimeWarning, match="no page was served") as record, capture_probs(pipe):
        flow = pipe.analyze(dataset_dataflow=dd.DataFromList(make_pages(1), shuffle=False))
    assert "none reached" not in str(record[0].message)
    flow.reset_state()
    assert len(list(flow)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a capture with rows says nothing
        with capture_probs(pipe):
            run_pipe(pipe, make_pages(1, seed=29))


def test_page_numbers_are_one_based_on_every_version(tiny):
    pipe = make_pipe(tiny("layoutlm"))
    with capture_probs(pipe) as cap:
        run_pipe(pipe, make_pages(4, n_documents=2, seed=30))
    assert sorted(cap.column("page_number").tolist()) == [1, 1, 2, 2]
