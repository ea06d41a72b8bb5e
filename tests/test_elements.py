"""Detected elements of deepdoctection's DETR-family detectors: one row per element each service
stores, exact against what deepdoctection stores, on rendered pages of the sample PDFs (real
pipelines, tiny random detectors built offline)."""

import numpy as np
import pytest

from probhook import capture_probs
from probhook.detections import NO_OBJECT
from probhook.element_view import ElementView
from probhook.testing import (
    CELL_LABELS,
    LAYOUT_LABELS,
    make_cell_service,
    make_detector_pipe,
    make_layout_service,
    render_pages,
    run_pipe,
    sample_pdfs,
)

PDFS = [*sample_pdfs()[:4], *[p for p in sample_pdfs() if p.stem == "letter_and_invoice"]]
"""Five documents, one of two pages."""


@pytest.fixture(scope="module")
def layout(detector):
    return detector("deformable_detr")


@pytest.fixture(scope="module")
def cells(detector):
    return detector("table_transformer")


def elements_of(page, service):
    return page.get_annotation(service_ids=service.service_id)


def heads_by_service(cap, pipe):
    layout, cells = cap.heads.values()
    assert layout.labels == LAYOUT_LABELS
    assert cells.labels == (*CELL_LABELS, NO_OBJECT)
    return dict(zip(pipe.pipe_component_list, (layout, cells), strict=True))


@pytest.mark.parametrize("filtered", [False, True], ids=["all-classes", "filter-categories"])
def test_every_element_has_its_row_with_the_stored_score(layout, cells, filtered):
    filters = {"layout_filter": ["figure", "caption"], "cell_filter": ["table"]} if filtered else {}
    pipe = make_detector_pipe(layout, cells, **filters)
    pages = render_pages(PDFS, seed=3)
    with capture_probs(pipe) as cap:
        out = run_pipe(pipe, pages)
    heads = heads_by_service(cap, pipe)
    layout_service, cell_service = pipe.pipe_component_list
    excluded = {layout_service: set(filters.get("layout_filter", ())),
                cell_service: set(filters.get("cell_filter", ()))}  # fmt: skip
    two_per_query = not_most_probable = 0
    for page in out:
        for service, view in heads.items():
            stored = elements_of(page, service)
            rows = cap.elements(page, view.name)
            # exactly the page's elements of this detector, in the order they were stored
            assert [d.key for d in rows] == [a.annotation_id for a in stored]
            queries = [d.meta["query"] for d in rows]
            two_per_query += len(queries) - len(
                set(zip(queries, [d.meta["parent_id"] for d in rows], strict=False))
            )
            for ann, dist in zip(stored, rows, strict=True):
                assert cap.get(ann) is not None
                assert cap.get(ann).seq == dist.seq
                category = ann.category_name.value
                assert abs(dist.probs[dist.labels.index(category)] - ann.score) <= 1e-6
                assert dist.predicted == category == dist.meta["category"]
                assert abs(dist.confidence - ann.score) <= 1e-6
                assert list(dist.box) == list(ann.bbox)
                assert dist.meta["image_id"] == page.image_id
                assert dist.meta["file_name"] == page.file_name
                assert dist.meta["document_id"] == page.document_id
                if service is cell_service:  # a cell of one of the page's tables
                    assert dist.meta["parent_id"] in {t.annotation_id for t in page.tables}
                    assert dist.meta["activation"] == "softmax"
                    real = dist.probs[:-1]
                    assert dist.predicted == dist.labels[int(np.argmax(real))]
                    not_most_probable += dist.probs[-1] > dist.probs[dist.labels.index(category)]
                else:
                    assert dist.meta["parent_id"] is None
                    assert dist.meta["activation"] == "sigmoid"
                assert category not in excluded[service]
    # the kit's detectors make the cases that matter: a query giving two elements (sigmoid),
    # elements whose "no object" probability is higher than their class's (softmax)
    assert two_per_query > 0
    assert filtered or not_most_probable > 0
    assert len(heads[cell_service]) > 0
    assert len(heads[layout_service]) > 5 * len(out)


def stored_state(pages, pipe):
    """Every stored element of ``pipe``'s services: id, category, score and box, page by page."""
    return [
        [(a.annotation_id, a.category_name.value, a.score, tuple(a.bbox), a.service_id)
         for s in pipe.pipe_component_list for a in elements_of(page, s)]
        for page in pages
    ]  # fmt: skip


def test_deepdoctection_stores_the_same_with_and_without_a_capture(layout, cells):
    pipe = make_detector_pipe(layout, cells, cell_filter=["table"])
    run_pipe(pipe, render_pages(PDFS[:1]))  # deepdoctection sets its timers on the first run
    _layout_service, _cell_service = pipe.pipe_component_list
    before = {id(o): set(vars(o)) for o in _instances(pipe)}
    plain = stored_state(run_pipe(pipe, render_pages(PDFS)), pipe)
    with capture_probs(pipe, discarded=True, keep_logits=True) as cap:
        captured = stored_state(run_pipe(pipe, render_pages(PDFS)), pipe)
    assert captured == plain
    assert sum(map(len, plain)) > 20
    assert len(cap) > sum(map(len, plain))  # discarded queries too
    from probhook.detections import activate

    for view in cap.heads.values():  # keep_logits: each row's logits are its query's
        kinds = set(view.column("activation"))
        np.testing.assert_allclose(activate(view.logits, kinds.pop()), view.probs, atol=1e-7)
    # every wrapper is gone: the instances hold what they held before
    assert {id(o): set(vars(o)) for o in _instances(pipe)} == before


def _instances(pipe):
    for service in pipe.pipe_component_list:
        yield from (service, service.dp_manager, service.predictor,
                    service.predictor.feature_extractor)  # fmt: skip


def test_discarded_queries_have_rows_marked_with_why(layout, cells):
    pipe = make_detector_pipe(layout, cells, layout_filter=["figure", "caption"])
    with capture_probs(pipe, discarded=True) as cap:
        out = run_pipe(pipe, render_pages(PDFS[:3]))
    layout_view, cell_view = cap.heads.values()
    reasons = set()
    for page in out:
        rows = cap.elements(page, layout_view.name, discarded=True)
        kept = [d for d in rows if d.meta["discarded"] is None]
        assert [d.key for d in kept] == [
            a.annotation_id for a in elements_of(page, pipe.pipe_component_list[0])
        ]
        lost = rows[len(kept) :]
        assert all(d.key == f"{page.image_id}#q{d.meta['query']}" and d.meta["discarded"]
                   for d in lost)  # fmt: skip
        # every query of the forward: as elements, or as a discarded row (once)
        assert {d.meta["query"] for d in rows} == set(range(24))
        assert len(lost) == 24 - len({d.meta["query"] for d in kept})
        reasons |= {d.meta["discarded"] for d in lost}
        for d in lost:  # a discarded query predicts its best class
            assert d.predicted == d.labels[int(np.argmax(d.probs))]
            if d.meta["discarded"] == "category":  # only candidates of filtered classes
                assert d.predicted in {"figure", "caption"}
        for table in cells_parents(cap, cell_view, page):
            queries = [d.meta["query"] for d in cell_view.elements(page, discarded=True)
                       if d.meta["parent_id"] == table]  # fmt: skip
            assert set(queries) == set(range(24))
    # suppressed, boxes deepdoctection refused, filtered classes, nothing above the threshold
    assert {"nms", "service", "category", "threshold"} <= reasons
    assert cap.elements(out[0], discarded=False) != cap.elements(out[0], discarded=True)


def cells_parents(cap, view, page):
    return {d.meta["parent_id"] for d in view.elements(page, discarded=True)}


def test_padded_crops_and_generated_elements(layout, cells):
    """A padder (boxes moved back by deepdoctection after predict) and a result generator
    (full-table elements of score 0 for classes it found none of, from no query)."""
    import deepdoctection as dd

    cell_service = make_cell_service(cells, generator=True, padding=20)
    pipe = dd.DoctectionPipe([make_layout_service(layout), cell_service])
    with capture_probs(pipe) as cap:
        out = run_pipe(pipe, render_pages(PDFS[:3]))
    generated = 0
    for page in out:
        for ann in elements_of(page, cell_service):
            dist = cap.get(ann)
            if ann.score == 0.0 and dist is None:  # made by the generator: no query, no row
                generated += 1
                continue
            assert abs(dist.confidence - ann.score) <= 1e-6
            assert dist.predicted == ann.category_name.value
            assert list(dist.box) == list(ann.bbox)
    assert generated > 0


def test_a_bare_detector_gives_one_row_per_returned_detection(layout):
    from probhook.testing import detector_for

    det = detector_for(layout)
    image = render_pages(PDFS[:1])[0].image
    with capture_probs(det) as cap:
        results = det.predict(image)
    assert len(cap) == len(results) > 0
    for i, result in enumerate(results):
        dist = cap.get(i)
        assert dist.predicted == result.class_name.value
        assert abs(dist.confidence - result.score) <= 1e-6
        assert dist.key == i
        assert dist.meta["discarded"] is None
        assert list(dist.box) == [round(v) for v in result.box]
    assert "predict" not in vars(det)


def test_detectors_it_cannot_map_are_named(layout):
    import deepdoctection as dd

    class MarginDetector(dd.ObjectDetector):
        """A user's own detector: one table in the page margin, no class distribution."""

        def __init__(self):
            self.name, self.categories = "margin", dd.ModelCategories({1: "table"})
            self.model_id = self.get_model_id()

        def predict(self, np_img):
            return [dd.DetectionResult(box=[1.0, 1.0, 20.0, 20.0], score=0.9, class_id=1,
                                       class_name=dd.get_type("table"))]  # fmt: skip

        def get_category_names(self):
            return self.categories.get_categories(as_dict=False)

        @classmethod
        def get_requirements(cls):
            return []

        def clone(self):
            return MarginDetector()

    own = dd.ImageLayoutService(MarginDetector())
    with pytest.raises(ValueError, match="MarginDetector is not a DETR-family"):
        capture_probs(own).start()
    with pytest.raises(ValueError, match="MarginDetector is not a DETR-family"):
        capture_probs(MarginDetector()).start()
    with pytest.raises(ValueError, match=r"found no .* cannot map: image_margin"):
        capture_probs(dd.DoctectionPipe([own])).start()
    pipe = dd.DoctectionPipe([own, make_layout_service(layout)])
    warned = pytest.warns(RuntimeWarning, match=r"image_margin .*MarginDetector")
    with warned, capture_probs(pipe) as cap:
        out = run_pipe(pipe, render_pages(PDFS[:1]))
    (view,) = cap.heads.values()
    assert len(view) == len(elements_of(out[0], pipe.pipe_component_list[1])) > 0


def test_temperature_and_activation_do_not_apply_to_elements(layout):
    service = make_layout_service(layout)
    for options in ({"temperature": 2.0}, {"activation": "softmax"}):
        with pytest.raises(ValueError, match="element rows are the detector's own scores"):
            capture_probs(service, **options).start()
        assert "serve" not in vars(service)  # all or nothing


@pytest.fixture(scope="module")
def captured(layout, cells, tmp_path_factory):
    """A captured run of layout and table structure, its rows also streamed to Parquet."""
    pipe = make_detector_pipe(layout, cells)
    sink = tmp_path_factory.mktemp("rows") / "elements.parquet"
    with capture_probs(pipe, sink=sink) as cap:
        pages = run_pipe(pipe, render_pages(PDFS[:2]))
    return cap, pages, dict(cap.sink.paths)


def test_flags_measure_each_element_at_its_own_class(captured):
    cap, _, _ = captured
    for view in cap.heads.values():
        dists = list(view.distributions())
        confidence = np.array([d.confidence for d in dists])
        margin = np.array([d.margin for d in dists])
        np.testing.assert_allclose(view.confidence(), confidence)
        np.testing.assert_allclose(view.margin(), margin)
        assert view.flag(min_confidence=0.5).tolist() == (confidence < 0.5).tolist()
        assert view.flag(min_margin=0.2).tolist() == (margin < 0.2).tolist()
        per_label = view.flag(min_confidence={view.labels[0]: 0.99})
        expected = [d.predicted == view.labels[0] and d.confidence < 0.99 for d in dists]
        assert per_label.tolist() == expected
        assert view.flagged_keys(min_confidence=0.5) == [d.key for d in dists if d.confidence < 0.5]
    layout_view, cell_view = cap.heads.values()
    assert (layout_view.margin() < 0).any()  # second choices of their queries
    for call in (layout_view.entropy, lambda: layout_view.flag(max_entropy=0.5)):
        with pytest.raises(ValueError, match=r"sigmoid detector .* have no entropy"):
            call()
    p = cell_view.probs.astype(np.float64)
    np.testing.assert_allclose(cell_view.entropy(), -(p * np.log(np.where(p > 0, p, 1))).sum(1))
    with pytest.raises(ValueError, match="matched to a true box"):
        cell_view.calibration(["row"] * len(cell_view))


def test_exports_and_files_read_back_as_elements(captured, tmp_path):
    import probhook

    cap, pages, sink_paths = captured
    for name, view in cap.heads.items():
        df = view.to_pandas()
        assert df["predicted"].tolist() == df["category"].tolist()
        chosen = [df[f"p_{c}"].iloc[i] for i, c in enumerate(df["category"])]
        np.testing.assert_allclose(df["confidence"], chosen)
        assert df["entropy"].isna().all() == (df["activation"] == "sigmoid").all()
        assert df["key"].tolist() == view.keys
        assert df["discarded"].isna().all()
        for path in (view.to_parquet(tmp_path / "rows.parquet"), sink_paths[name]):
            loaded = probhook.load(path)
            assert isinstance(loaded, ElementView)
            assert len(loaded) == len(view)
            for page in pages:
                again = loaded.elements(page.image_id)
                assert [d.key for d in again] == [d.key for d in view.elements(page)]
                for a, b in zip(again, view.elements(page), strict=True):
                    assert a.predicted == b.predicted
                    assert a.confidence == b.confidence
                    assert a.box == b.box
            np.testing.assert_array_equal(loaded.flag(min_margin=0.3), view.flag(min_margin=0.3))


def test_plots_and_the_notebook_show_element_measures(captured):
    import matplotlib

    matplotlib.use("Agg")
    cap, pages, _ = captured
    layout_view, cell_view = cap.heads.values()
    ax = layout_view.plot.confidence(bins=10)
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_array_equal(heights, np.histogram(layout_view.confidence(), 10, (0, 1))[0])
    ax = layout_view.plot.uncertainty()  # negative margins: the axis starts at -1
    assert ax.get_xlim()[0] == -1.0
    assert sum(p.get_height() for p in ax.patches) == len(layout_view)
    with pytest.raises(ValueError, match="no entropy"):
        layout_view.plot.uncertainty(measure="entropy")
    assert cell_view.plot.uncertainty(measure="entropy") is not None
    with pytest.raises(ValueError, match="matched to a true box"):
        cell_view.plot.reliability(["row"] * len(cell_view))
    element = cap.elements(pages[0])[0]
    title = layout_view.plot.page(element.key).get_title()
    assert f"{element.predicted} ({element.confidence:.1%})" in title
    html = cap._repr_html_()
    for view in (layout_view, cell_view):
        assert f"mean confidence {view.confidence().mean():.3f}" in html
    assert "Distribution(" in repr(element)
    assert element._repr_html_()


def test_elements_next_to_a_page_classifier(layout, tiny):
    """One pipe, a layout detector and a LayoutLM page classifier: pages and elements are
    read from the one capture, each from its head."""
    import deepdoctection as dd

    from probhook.testing import make_pages, make_service

    pipe = dd.DoctectionPipe([make_layout_service(layout), make_service(tiny("layoutlm"))])
    with capture_probs(pipe) as cap:  # pages with words (the classifier reads them) and pixels
        out = run_pipe(pipe, make_pages(2, n_documents=2, with_pixels=True))
    for page in out:
        assert cap.get(page).labels == ("letter", "form", "invoice", "memo")
        elements = elements_of(page, pipe.pipe_component_list[0])
        assert [d.key for d in cap.elements(page)] == [a.annotation_id for a in elements]
        assert all(cap.get(a).predicted == a.category_name.value for a in elements)
    assert cap.get("no-such-element") is None
    with pytest.raises(ValueError, match="not a detector head"):
        cap.elements(out[0], head=next(n for n in cap.heads if n.startswith("LayoutLM")))


def test_two_captures_of_one_pipe_both_get_every_element(layout, cells):
    pipe = make_detector_pipe(layout, cells)
    with capture_probs(pipe) as outer, capture_probs(pipe, discarded=True) as inner:
        out = run_pipe(pipe, render_pages(PDFS[:1]))
    for service in pipe.pipe_component_list:
        for ann in elements_of(out[0], service):
            assert outer.get(ann).seq is not None
            np.testing.assert_array_equal(outer.get(ann).probs, inner.get(ann).probs)
    assert len(inner) > len(outer) > 0
    assert "serve" not in vars(pipe.pipe_component_list[0])
