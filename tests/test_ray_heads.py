"""Every head of a Ray run, on a real local Ray instance: a word classifier's rows and a layout
and a table-structure detector's element rows equal the local engine's on the same documents,
each in its own folder that ``probhook.load`` and ``probhook report`` read."""

import contextlib
import io
import shutil
import time
from pathlib import Path

import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
from pypdf import PdfWriter

ray = pytest.importorskip("ray", reason="the Ray engine needs probhook[ray]")

import probhook  # noqa: E402
from probhook import demo  # noqa: E402
from probhook.cli import main  # noqa: E402
from probhook.element_view import ElementView  # noqa: E402
from probhook.integrations import ray as engine  # noqa: E402
from probhook.scan import run_heads  # noqa: E402
from probhook.testing import build_token_model  # noqa: E402

PDFS = ["invoice_1.pdf", "letter_and_invoice.pdf", "form_1.pdf"]  # 4 pages
OUTPUTS = {"": "run.parquet", "layout": "run.layout.parquet", "tables": "run.tables.parquet"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The sample PDFs with tables and words, and a blank page (no words: not classified)."""
    root = tmp_path_factory.mktemp("docs")
    for name in PDFS:
        shutil.copy(demo.SAMPLES_DIR / name, root / name)
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    writer.write(root / "blank.pdf")
    return root


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return build_token_model("layoutlm", tmp_path_factory.mktemp("words"))


@pytest.fixture(scope="module")
def models(words, detector):
    """A word classifier, a layout detector (Deformable DETR) and a table-structure one."""
    layout, cells = detector("deformable_detr"), detector("table_transformer")
    return ["--model", words.path, "--layout-model", layout.path, "--table-model", cells.path]


@contextlib.contextmanager
def torch_threads(n):
    """A Ray worker asking for one CPU runs torch on one thread: a convolution's sums run in
    that order only with the same thread count (the last float32 bits otherwise differ)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_run(folder, models, tmp_path_factory):
    """``probhook run`` in this process: words in run.parquet, elements beside it."""
    out = tmp_path_factory.mktemp("local") / "run.parquet"
    with torch_threads(1), contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(folder), *map(str, models), "--out", str(out), "-q"]) == 0
    return out.parent


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_run(cluster, folder, models, tmp_path_factory):
    """``probhook run --engine ray`` with two workers; returns the output folder and stdout."""
    out = tmp_path_factory.mktemp("ray") / "rows"
    printed = io.StringIO()
    started = time.perf_counter()
    argv = ["run", str(folder), *map(str, models), "--engine", "ray", "--workers", "2",
            "--out", str(out), "-q"]  # fmt: skip
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    print(f"Ray run: {time.perf_counter() - started:.1f} s")
    return out, printed.getvalue()


def frame(path):
    """An output's rows as a DataFrame in key order, without the writers' sequence numbers."""
    df = probhook.load(path).to_pandas().drop(columns="seq")
    return df.sort_values("key").reset_index(drop=True)


@pytest.mark.parametrize("part", list(OUTPUTS), ids=["words", "layout", "tables"])
def test_each_output_on_ray_equals_the_local_engine_s_bit_for_bit(ray_run, local_run, part):
    out, _ = ray_run
    remote, local = frame(engine.folder_of(out, part)), frame(local_run / OUTPUTS[part])
    assert len(remote) == len(local) > 0
    assert list(remote.columns) == list(local.columns)
    assert remote.equals(local)  # keys (annotation ids), page columns, boxes, probabilities
    assert remote["key"].is_unique


def test_each_folder_loads_as_its_head(ray_run, local_run):
    out, _ = ray_run
    words = probhook.load(out)
    assert not isinstance(words, ElementView)
    page = words.column("image_id")[0]
    local_words = probhook.load(local_run / "run.parquet").words(page)
    assert sorted(d.key for d in words.words(page)) == sorted(d.key for d in local_words)
    for part in ("layout", "tables"):
        elements = probhook.load(engine.folder_of(out, part))
        assert isinstance(elements, ElementView)
        local = probhook.load(local_run / OUTPUTS[part])
        assert elements.labels == local.labels
        page = local.column("image_id")[0]
        keys = sorted(d.key for d in elements.elements(page))
        assert keys == sorted(d.key for d in local.elements(page))


def test_report_finds_every_head_of_the_run(ray_run, local_run, tmp_path, capsys):
    out, _ = ray_run
    heads, local = run_heads(out), run_heads(local_run / "run.parquet")
    assert list(heads) == list(local)
    assert len(heads) == 3
    for name, rows in heads.items():
        assert rows.labels == local[name].labels
        assert sum(len(c.probs) for c in rows.chunks()) == sum(
            len(c.probs) for c in local[name].chunks()
        )
    assert main(["report", str(out), "-o", str(tmp_path / "report.html")]) == 0
    printed = capsys.readouterr().out
    for name in heads:
        assert f"{name}: " in printed
    assert (tmp_path / "report.html").stat().st_size > 0


def test_the_summary_counts_each_output_and_the_page_without_words(ray_run, local_run):
    out, printed = ray_run
    table = pds.dataset(out, format="parquet").to_table()
    status = {Path(r["location"]).name: r["status"] for r in table.to_pylist()
              if r["status"] != "ok"}  # fmt: skip
    assert status == {"blank.pdf": engine.NO_WORDS}
    words = probhook.load(local_run / "run.parquet")
    layout, cells = (probhook.load(local_run / OUTPUTS[p]) for p in ("layout", "tables"))
    assert printed.startswith("4 pages classified in 4 documents by 2 Ray workers")
    assert "1 pages not classified (no words)" in printed
    assert f"all rows: {out}/ ({len(words)} rows in " in printed
    assert f"layout rows: {out}.layout/ ({len(layout)} elements in " in printed
    assert f"tables rows: {out}.tables/ ({len(cells)} elements in " in printed


def test_a_page_classifier_with_a_detector_gives_the_local_rows_in_the_worker(detector, tmp_path):
    """The worker itself, in this process: the page classifier's set-up with a detector in
    front (pixels kept for it) is the local engine's."""
    layout = detector("deformable_detr")
    pdf = demo.SAMPLES_DIR / "invoice_1.pdf"
    local = tmp_path / "run.parquet"
    with contextlib.redirect_stdout(io.StringIO()):
        argv = ["run", str(pdf), "--layout-model", str(layout.path), "--out", str(local), "-q"]
        assert main(argv) == 0
    worker = engine.DocumentClassifier(demo.MODEL_DIR, layout_model=layout.path)
    tables = engine.unpack(worker({"path": [str(pdf)]}))
    assert set(tables) == {"", "layout"}
    for part, name in (("", "run.parquet"), ("layout", "run.layout.parquet")):
        mine = tmp_path / f"worker-{part or 'pages'}"
        mine.mkdir()
        pq.write_table(tables[part], mine / "part.parquet")
        assert frame(mine).equals(frame(tmp_path / name))


def test_unsupported_or_bad_detector_input_is_one_error_before_ray(detector, tmp_path, capsys):
    """Each refused before Ray starts or any document is read: one ``probhook: error:`` line,
    nothing written."""
    cells, layout = detector("table_transformer"), detector("deformable_detr")
    taken = tmp_path / "old.layout"  # an earlier run's element rows
    taken.mkdir()
    (taken / "part.parquet").write_bytes(b"")
    cases = [
        ("rows", ["--table-model", cells.path], "give a --layout-model whose labels include table"),
        ("rows", ["--layout-model", tmp_path], "no config.json"),
        ("old", ["--layout-model", layout.path], f"the layout rows' folder {taken} exists"),
        ("old", [], f"the folder {taken} beside it holds an earlier run's rows"),
    ]  # fmt: skip
    for out, options, message in cases:
        argv = ["run", str(demo.SAMPLES_DIR / "memo_1.pdf"), "--engine", "ray",
                *map(str, options), "--out", str(tmp_path / out)]  # fmt: skip
        code = main(argv)
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("probhook:")]
        assert (code, captured.out, len(errors)) == (2, "", 1), captured.err
        assert errors[0].startswith("probhook: error: ")
        assert message in errors[0]
        assert not (tmp_path / out).exists()
    assert [p.name for p in taken.iterdir()] == ["part.parquet"]


def test_a_folder_holds_whole_files_only_local_or_by_uri(tmp_path):
    import pyarrow as pa

    from probhook.integrations.ray_sink import write_file

    table = pa.table({"key": ["a", "b"]})
    write_file(table, str(tmp_path / "run"), "one.parquet")
    write_file(table, (tmp_path / "run.layout").as_uri(), "one.parquet")  # a URI pyarrow opens
    write_file(table.slice(1), str(tmp_path / "run"), "one.parquet")  # a task run again
    for folder, rows in (("run", 1), ("run.layout", 2)):
        assert [p.name for p in (tmp_path / folder).iterdir()] == ["one.parquet"]
        assert pq.read_table(tmp_path / folder / "one.parquet").num_rows == rows


def test_a_detector_that_found_nothing_is_said_so(tmp_path):
    import pyarrow as pa

    out = tmp_path / "rows"
    out.mkdir()
    table = pa.table({"status": ["ok"], "location": ["a.pdf"], "image_id": ["p1"]})
    pq.write_table(table, out / "part.parquet")
    summary = engine.summarize(out, parts=["layout"])
    assert summary.detectors == {"layout": (0, 0)}
    assert str(summary).splitlines()[-1] == "layout: no elements"


def test_an_analyzer_with_two_classifier_heads_is_refused_in_the_worker(words, tiny):
    from probhook.testing import make_token_pipe

    def factory():
        return make_token_pipe(words, sequence=tiny("layoutlm"))

    with pytest.raises(ValueError, match=r"has 2 classifier heads .* one label space per output"):
        engine.DocumentClassifier(factory=factory)


def test_a_killed_run_s_folders_read_with_a_warning_never_as_a_whole_run(tmp_path):
    """A run's folders are marked unfinished from its start until every write task is done:
    a run killed between leaves folders that ``probhook.load`` reads with a warning
    (``strict=True`` refuses) and ``probhook report`` reports with it."""
    import numpy as np

    from probhook import ProbBuffer
    from probhook.integrations.ray_sink import RowsWriter, mark
    from probhook.sink import FileSink

    out = tmp_path / "rows"
    writer = RowsWriter(out)
    writer.on_write_start()
    sink = FileSink(tmp_path / "written.parquet")  # one write task's file, as Ray leaves it
    buffer = ProbBuffer(2, 4, labels=["letter", "invoice"], sink=sink)
    buffer.append_batch(np.array([[0.9, 0.1]], np.float32), keys=["p1"])
    sink.close()
    for folder in (out, tmp_path / "rows.layout"):
        mark(str(folder))  # a write task marks the folder it writes first
        shutil.copy(tmp_path / "written.parquet", folder / "task.parquet")
        with pytest.warns(RuntimeWarning, match="written by a run that did not finish"):
            assert len(probhook.load(folder)) == 1
        with pytest.raises(ValueError, match="did not finish"):
            probhook.load(folder, strict=True)
    with pytest.warns(RuntimeWarning, match="did not finish"):
        assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    writer.on_write_complete(type("Result", (), {"write_returns": [["layout"], []]})())
    for folder in (out, tmp_path / "rows.layout"):
        assert [p.name for p in folder.iterdir()] == ["task.parquet"]
        assert len(probhook.load(folder, strict=True)) == 1
