"""The Ray engine on a real local Ray instance, with the real deepdoctection pipeline and the demo
model: the same rows as the local engine, a killed worker, a corrupt PDF."""

import contextlib
import functools
import io
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pyarrow.dataset as pds
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs probhook[ray]")

import probhook  # noqa: E402
from probhook import demo  # noqa: E402
from probhook.cli import main  # noqa: E402
from probhook.integrations import ray as engine  # noqa: E402

COPIES = 2  # 24 PDFs, 26 pages, and one corrupt PDF


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    for copy in range(COPIES):
        for pdf in sorted(demo.SAMPLES_DIR.glob("*.pdf")):
            shutil.copy(pdf, root / f"{pdf.stem}-{copy}.pdf")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    return root


@pytest.fixture(scope="module")
def local_rows(folder, tmp_path_factory):
    """The local engine's rows for the folder (``probhook run``, in this process)."""
    out = tmp_path_factory.mktemp("local") / "rows.parquet"
    started = time.perf_counter()
    assert main(["run", str(folder), "--out", str(out), "--quiet"]) == 0
    print(f"local run: {time.perf_counter() - started:.1f} s")
    return probhook.load(out)


@pytest.fixture(scope="module")
def cluster():
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    print(f"Ray tests took {time.perf_counter() - started:.1f} s with the cluster up")


@pytest.fixture(scope="module")
def ray_run(cluster, folder, tmp_path_factory):
    """``probhook run --engine ray`` with two workers (joining the running Ray instance)."""
    out = tmp_path_factory.mktemp("ray") / "rows"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        argv = [
            "run",
            str(folder),
            "--engine",
            "ray",
            "--workers",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
        assert main(argv) == 0
    print(printed.getvalue())
    summary = engine.summarize(out)
    assert str(summary).splitlines()[0].split(" by ")[0] in printed.getvalue()
    return summary


def frame(view):
    """A head's rows as a DataFrame in page order, without the writer's sequence numbers."""
    df = view.to_pandas().drop(columns="seq")
    return df.sort_values(["location", "page_number"]).reset_index(drop=True)


def test_ray_rows_equal_the_local_rows_bit_for_bit(ray_run, local_rows):
    remote = probhook.load(ray_run.out)
    assert len(remote) == len(local_rows) == 13 * COPIES
    assert remote.labels == local_rows.labels
    left, right = frame(remote), frame(local_rows)
    assert list(left.columns) == list(right.columns)
    assert left.equals(right)  # every column, probabilities compared exactly
    assert left["image_id"].is_unique
    assert ray_run.pages == 13 * COPIES
    files = sorted(ray_run.out.glob("*.parquet"))
    assert ray_run.files == len(files) > 1  # one file per block


def test_a_corrupt_pdf_is_reported_and_the_rest_complete(ray_run):
    table = pds.dataset(ray_run.out, format="parquet").to_table()
    status = table.column("status").to_pylist()
    assert status.count("ok") == 13 * COPIES
    bad = [row for row in table.to_pylist() if row["status"] != "ok"]
    assert len(bad) == 1
    assert Path(bad[0]["location"]).name == "broken.pdf"
    assert bad[0]["status"].startswith("unreadable (")
    assert bad[0]["p_letter"] is None
    assert bad[0]["page_number"] is None
    assert ray_run.failed == [(bad[0]["location"], bad[0]["status"])]
    assert f"failed: {bad[0]['location']}: unreadable (" in str(ray_run)


def test_the_folder_loads_for_metrics_calibration_and_plots(ray_run, local_rows):
    import matplotlib

    matplotlib.use("Agg")
    remote = probhook.load(ray_run.out)

    def truth(view):  # a label named in each sample's file name
        return [next(x for x in view.labels if x in n) for n in view.column("file_name")]

    assert remote.calibration(truth(remote)) == pytest.approx(
        local_rows.calibration(truth(local_rows))
    )
    assert len(remote.by_document()) == 12 * COPIES
    assert remote.flag(min_confidence=0.9).sum() == local_rows.flag(min_confidence=0.9).sum()
    assert remote.plot.confidence(bins=10).figure is not None


def _analyzer_noting_pid(pid_dir):
    """A model factory that leaves the worker's pid behind, so that the test can kill it."""
    (Path(pid_dir) / str(os.getpid())).touch()
    return engine.default_analyzer(demo.MODEL_DIR)


def test_a_killed_worker_is_replaced_and_every_page_appears_once(
    cluster, folder, local_rows, tmp_path
):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    documents = sorted(folder.glob("*-0.pdf"))[-6:]  # 7 pages
    factory = functools.partial(_analyzer_noting_pid, tmp_path)
    rows = engine.classify(
        engine.documents_dataset(documents), factory=factory, workers=1, batch_size=1
    )
    tables, killed = [], None
    for packed in rows.iter_batches(batch_format="pyarrow", batch_size=None):
        tables.append(engine.unpack(packed)[""])
        if killed is None:  # the first batch is out, the others are not: kill the worker
            (pid_file,) = tmp_path.iterdir()
            killed = int(pid_file.name)
            os.kill(killed, signal.SIGKILL)
    pids = {int(p.name) for p in tmp_path.iterdir()}
    assert killed in pids
    assert len(pids) == 2  # the worker was replaced
    pages = [(row["location"], row["page_number"]) for t in tables for row in t.to_pylist()]
    local = frame(local_rows)
    expected = local[local["location"].isin([str(d) for d in documents])]
    assert len(pages) == len(set(pages)) == len(expected)
    assert sorted(pages) == sorted(zip(expected["location"], expected["page_number"], strict=True))


def test_no_page_is_dropped_without_words_or_beyond_the_ring(folder, tmp_path, local_rows):
    from pypdf import PdfWriter

    blank = tmp_path / "blank.pdf"
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    writer.write(blank)
    letter, memo = folder / "letter_1-0.pdf", folder / "memo_1-0.pdf"
    # in this process: the class itself, with a ring of one row (the others spill to the output)
    classifier = engine.DocumentClassifier(demo.MODEL_DIR, capacity=1)
    packed = classifier({"path": [str(blank), str(letter), str(memo)]})  # no bytes: read paths
    table = engine.unpack(packed)[""]
    rows = {Path(r["location"]).name: r for r in table.to_pylist()}
    assert len(table) == len(rows) == 3
    assert rows["memo_1-0.pdf"]["predicted"] == "memo"
    assert rows["blank.pdf"]["status"] == engine.NO_WORDS
    assert rows["blank.pdf"]["page_number"] == 1
    assert rows["blank.pdf"]["p_letter"] is None
    assert rows["letter_1-0.pdf"]["status"] == "ok"
    local = frame(local_rows).set_index("location").loc[str(letter)]
    assert rows["letter_1-0.pdf"]["p_letter"] == local["p_letter"]
    assert table.schema.metadata == classifier.schema.metadata


def test_bad_options_fail_before_any_work(tmp_path, capsys):
    for argv in (["--workers", "2"], ["--engine", "ray", "--workers", "0"]):
        with pytest.raises(SystemExit):
            main(["run", str(demo.SAMPLES_DIR), *argv])
    assert "--workers and --gpus-per-worker go with --engine ray" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers must be a positive int"):
        engine.classify(None, model_dir=demo.MODEL_DIR, workers=0)
    with pytest.raises(ValueError, match="exactly one"):
        engine.DocumentClassifier()
    with pytest.raises(engine.UsageError, match=r"no config\.json"):
        engine.classify(None, model_dir=tmp_path)
    (tmp_path / "old.parquet").write_bytes(b"")
    with pytest.raises(engine.UsageError, match="give a new or empty folder"):
        engine.run([demo.SAMPLES_DIR / "memo_1.pdf"], model_dir=demo.MODEL_DIR, out=tmp_path)


def test_without_ray_installed_engine_ray_is_one_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
    code = main(["run", str(demo.SAMPLES_DIR / "memo_1.pdf"), "--engine", "ray",
                 "--out", str(tmp_path / "rows")])  # fmt: skip
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    lines = [line for line in captured.err.splitlines() if not line.startswith("note: ")]
    assert lines == ['probhook: error: --engine ray needs ray, which is not installed: '
                     'pip install "probhook[ray]"']  # fmt: skip
    assert not (tmp_path / "rows").exists()


ODD_NAMES = ["a?b.pdf", "c#d.pdf", "e [x]*.pdf", "f%20g.pdf", "h;i=j&k.pdf", "ü é.PDF"]


def test_every_file_name_the_local_engine_reads_ray_reads(cluster, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in ODD_NAMES:
        shutil.copy(demo.SAMPLES_DIR / "memo_1.pdf", folder / name)
    (folder / "notes.txt").write_text("not a document")
    from probhook.cli_paths import collect_inputs

    local = [str(p) for p in collect_inputs([folder], ocr=False).documents]
    assert sorted(Path(p).name for p in local) == sorted(ODD_NAMES)
    for given in (folder, local):  # a folder, and the files the command line found in it
        paths = engine.documents_dataset(given).select_columns(["path"]).take_all()
        assert sorted(r["path"] for r in paths) == sorted(local)


def test_engine_ray_quiet_prints_nothing_but_the_summary_and_misses_no_document(tmp_path):
    """A child process (Ray's loggers and the C++ core worker's lines are process-wide); no
    running Ray instance: it starts its own, as a user's run does."""
    import subprocess

    folder = tmp_path / "odd"
    folder.mkdir()
    for name in ODD_NAMES[:2]:
        shutil.copy(demo.SAMPLES_DIR / "memo_1.pdf", folder / name)
    out = tmp_path / "rows"
    command = [sys.executable, "-m", "probhook", "run", str(folder), "--engine", "ray", "-q",
               "--model", str(demo.MODEL_DIR), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("2 pages classified in 2 documents by 1 Ray workers")
    assert "failed" not in done.stdout
    names = {Path(p).name for p in probhook.load(out).column("location")}
    assert names == set(ODD_NAMES[:2])


def test_a_document_with_no_row_is_reported_as_failed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "rows"
    out.mkdir()
    table = pa.table({"status": ["ok"], "location": [str(tmp_path / "seen.pdf")]})
    pq.write_table(table, out / "part.parquet")
    summary = engine.summarize(out, documents=[tmp_path / "seen.pdf", tmp_path / "lost.pdf"])
    assert summary.failed == [(str(tmp_path / "lost.pdf"), "not read: no row came back from Ray")]
    assert f"failed: {tmp_path / 'lost.pdf'}: not read" in str(summary)


def test_a_pdf_without_pages_is_reported(tmp_path):
    from pypdf import PdfWriter

    empty = tmp_path / "empty.pdf"
    PdfWriter().write(empty)
    classifier = engine.DocumentClassifier(demo.MODEL_DIR)
    memo = demo.SAMPLES_DIR / "memo_1.pdf"
    table = engine.unpack(classifier({"path": [str(empty), str(memo)]}))[""]
    rows = {Path(r["location"]).name: r for r in table.to_pylist()}
    assert rows["empty.pdf"]["status"] == "no pages (deepdoctection read 0 pages from it)"
    assert rows["memo_1.pdf"]["status"] == "ok"
