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
    for table in rows.iter_batches(batch_format="pyarrow", batch_size=None):
        tables.append(table)
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
    classifier = engine.PageClassifier(demo.MODEL_DIR, capacity=1)
    table = classifier({"path": [str(blank), str(letter), str(memo)]})  # no bytes: read paths
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
        engine.PageClassifier()
    with pytest.raises(engine.UsageError, match=r"no config\.json"):
        engine.classify(None, model_dir=tmp_path)
    (tmp_path / "old.parquet").write_bytes(b"")
    with pytest.raises(engine.UsageError, match="give a new or empty folder"):
        engine.run([demo.SAMPLES_DIR / "memo_1.pdf"], model_dir=demo.MODEL_DIR, out=tmp_path)
