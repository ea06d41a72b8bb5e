"""``probhook report``: a self-contained page per run (single file, sink with a file per head,
folder), drift against a reference, labels, the review rule and queue; bad input is named."""

import csv
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from element_files import write_elements

import probhook
from probhook import capture_probs
from probhook.cli import main
from probhook.labels_file import LabelsError, read_labels
from probhook.testing import (
    build_model,
    build_token_model,
    make_token_pages,
    make_token_pipe,
    run_pipe,
)

pytest.importorskip("deepdoctection")


def dd_run(models, folder, seed):
    """A real deepdoctection pipe with a token head and a page head, every row to a sink."""
    sequence, token = models
    pipe = make_token_pipe(token, sliding_window_stride=16, sequence=sequence)
    folder.mkdir()
    with capture_probs(pipe, sink=folder / "run.parquet") as cap:
        run_pipe(pipe, make_token_pages(12, n_documents=4, seed=seed))
    return folder / "run.parquet", cap


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-runs")
    models = (
        build_model("layoutlm", root / "seq", seed=1),
        build_token_model("layoutlm", root / "tok"),
    )
    current, cap = dd_run(models, root / "current", seed=2)
    reference, _ = dd_run(models, root / "reference", seed=3)
    return root, current, reference, cap


def write_labels(path, header, lines):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(lines)
    return path


def word_and_page_labels(cap, path, rng):
    """True classes by key: every word (drawn from its own distribution) and every page."""
    lines = []
    for view in cap.heads.values():
        probs = view.probs.astype(np.float64)
        drawn = np.minimum(
            (probs.cumsum(1) < rng.random((len(probs), 1))).sum(1), len(view.labels) - 1
        )
        lines += [(key, view.labels[t]) for key, t in zip(view.keys, drawn, strict=True)]
    return write_labels(path, ["key", "label"], lines)


def test_report_of_a_two_head_run_with_reference_and_labels(runs, capsys):
    root, current, reference, cap = runs
    labels = word_and_page_labels(cap, root / "labels.csv", np.random.default_rng(0))
    out = root / "report.html"
    code = main(["report", str(current), "--reference", str(reference), "--labels", str(labels),
                 "-o", str(out), "--max-error", "0.3", "--delta", "0.2"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"report: {out}" in printed
    html = out.read_text(encoding="utf-8")
    words = next(v for v in cap.heads.values() if "word_id" in v.schema)
    pages = next(v for v in cap.heads.values() if "word_id" not in v.schema)
    for view in (words, pages):
        assert f"<h2>{view.name}</h2>" in html.replace("&#x27;", "'")
    assert f"{len(words)} words" in html
    assert f"{len(pages)} pages" in html
    assert html.count("Did the documents drift?") == 2
    assert "chi-square" in html
    assert html.count("Measured on the") == 2  # every row labelled: measured accuracy shown
    assert "Review words whose top probability is below" in html  # a rule for the words
    assert html.count("<svg") >= 6  # class shares, confidence, accuracy: per head
    least = words.keys[int(np.argmin(words.confidence()))]
    assert least in html  # the least confident word is in its queue, with file and page
    assert re.search(r"doc\d_p\d\.pdf", html)
    # self-contained: nothing to fetch, no script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html
    assert "<link" not in html
    assert "url(" not in html


def test_a_run_of_one_file_and_a_ray_like_folder(runs, tmp_path):
    _root, _current, _, cap = runs
    pages = next(v for v in cap.heads.values() if "word_id" not in v.schema)
    table = pages.to_arrow()
    folder = tmp_path / "folder"
    folder.mkdir()
    ok = pa.array(["ok"] * len(table))
    pq.write_table(table.append_column("status", ok), folder / "part-0.parquet")
    broken = table.slice(0, 2).append_column("status", pa.array(["unreadable PDF"] * 2))
    pq.write_table(broken, folder / "part-1.parquet")
    code = main(["report", str(folder), "-o", str(tmp_path / "f.html")])
    assert code == 0
    html = (tmp_path / "f.html").read_text(encoding="utf-8")
    assert f"{len(pages)} pages" in html
    assert "No reference run given" in html
    assert "give --labels" in html
    single = tmp_path / "one.arrows"
    pq.write_table(table, tmp_path / "one.parquet")
    model = torch.nn.Identity()
    with capture_probs(model, labels=list(pages.labels), activation="none", sink=single) as one:
        model(torch.as_tensor(pages.probs))
    assert main(["report", str(single), "-o", str(tmp_path / "s.html")]) == 0
    assert main(["report", str(tmp_path / "one.parquet"), "--reference", str(single),
                 "-o", str(tmp_path / "t.html")]) == 0  # fmt: skip
    assert "Kolmogorov-Smirnov" in (tmp_path / "t.html").read_text(encoding="utf-8")
    assert len(one) == len(pages)


def test_labels_naming_unknown_pages_or_classes_are_refused(runs, capsys):
    root, current, _, cap = runs
    pages = next(v for v in cap.heads.values() if "word_id" not in v.schema)
    files, numbers = pages.column("file_name"), pages.column("page_number")
    lines = [(f, n, "letter") for f, n in zip(files[2:], numbers[2:], strict=True)]
    lines += [("missing.pdf", 1, "letter"), ("missing.pdf", 2, "memo"), ("gone.pdf", 1, "form")]
    lines += [(files[0], numbers[0], "spam"), (files[1], numbers[1], "spam")]
    bad = write_labels(root / "bad.csv", ["file_name", "page_number", "label"], lines)
    assert main(["report", str(current), "--labels", str(bad), "-o", str(root / "x.html")]) == 2
    err = capsys.readouterr().err
    n = len(lines)
    assert f"3 of its {n} lines name rows the run does not hold" in err
    assert "('missing.pdf', 1), ('missing.pdf', 2), ('gone.pdf', 1))" in err
    assert f"2 of its {n} lines name classes the classifier does not have: 'spam' (2 lines)" in err
    assert not (root / "x.html").exists()
    for text, message in [
        ("image_id,klass\nx,letter\n", "expected 'label' and one of 'key', 'image_id'"),
        ("key,label\n", "holds no labels"),
        ("file_name,page_number,label\na.pdf,one,letter\n", "line 2: page_number 'one'"),
        ("key,label\n,letter\n", "line 2: empty label or key"),
        (
            "key,label\na,memo\na,memo\nb,form\na,form\n",
            "rows labelled twice with different classes (1 line: 'a')",
        ),
    ]:
        path = root / "format.csv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(LabelsError, match=re.escape(message)):
            read_labels(path)


def test_page_labels_name_documents_by_their_own_file_name(runs):
    """deepdoctection names a page's file after the page; a person names the document."""
    root, current, _, cap = runs
    pages = next(v for v in cap.heads.values() if "word_id" not in v.schema)
    locations = [str(x).rsplit("/", 1)[-1] for x in pages.column("location")]
    lines = [
        (loc, n, "memo") for loc, n in zip(locations, pages.column("page_number"), strict=True)
    ]
    path = write_labels(root / "docs.csv", ["file_name", "page_number", "label"], lines)
    out = root / "docs.html"
    assert main(["report", str(current), "--labels", str(path), "-o", str(out)]) == 0
    share = float(np.mean(pages.probs.argmax(axis=1) == pages.labels.index("memo")))
    assert f"Measured on the {len(pages)} labelled rows: <b>{share:.1%}</b>" in out.read_text()


def test_other_labels_empty_runs_nan_rows_and_usage_errors(runs, tmp_path, capsys):
    _root, current, _, _ = runs
    other, model = tmp_path / "other.parquet", torch.nn.Identity()
    with capture_probs(model, labels=["yes", "no"], activation="none") as cap:
        model(torch.rand(5, 2))
    cap.to_parquet(other)
    pages = next(current.parent.glob("run.*.parquet"))  # the page head's file
    argv = ["report", str(other), "--reference", str(pages), "-o", str(tmp_path / "a.html")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has labels ['letter', 'form', 'invoice', 'memo'], the current run ['yes', 'no']" in err
    empty = tmp_path / "empty.parquet"
    with (
        pytest.warns(RuntimeWarning, match="no forward"),
        capture_probs(model, labels=["yes", "no"], activation="none") as cap,
    ):
        pass  # a run in which nothing was classified
    cap.to_parquet(empty)
    assert main(["report", str(empty), "-o", str(tmp_path / "e.html")]) == 1
    assert "holds no rows: nothing to report" in capsys.readouterr().err
    nan = tmp_path / "nan.parquet"
    model = torch.nn.Identity()
    with capture_probs(model, labels=["yes", "no"]) as cap:
        model(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 1.0], [float("inf"), 1.0]]))
    cap.to_parquet(nan)
    assert main(["report", str(nan), "-o", str(tmp_path / "n.html")]) == 0
    assert "2 with NaN or inf probabilities excluded" in capsys.readouterr().out
    html = (tmp_path / "n.html").read_text(encoding="utf-8")
    assert "2 rows with NaN or inf probabilities excluded" in html
    queue = html[html.index("least confident") :]
    assert queue.index("&ndash;") < queue.index("0.731")  # NaN rows head the queue
    html_out = str(tmp_path / "r.html")
    for argv, message in [
        (["report", str(tmp_path / "nope.parquet"), "-o", "r.html"], "RUN: no such file"),
        (["report", str(current), "-o", str(tmp_path / "r.txt")], "the report is an HTML file"),
        (["report", str(current), "--max-error", "2", "-o", html_out], "--max-error must"),
        (["report", str(current), "--labels", "no.csv", "-o", html_out], "--labels: no such"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


def test_compare_and_estimate_read_a_sink_run_head_by_head(runs):
    _, current, reference, cap = runs
    heads = probhook.scan.run_heads(current)
    assert set(heads) == set(cap.heads)
    with pytest.raises(ValueError, match=r"is a run of 2 heads \(.*\); pass one head's file"):
        probhook.compare(reference, current)
    for name, rows in heads.items():
        assert probhook.compare(probhook.scan.run_heads(reference)[name], rows).current.n == len(
            cap.heads[name]
        )


def test_element_rows_are_reported_as_elements_and_not_scored_by_page_labels(tmp_path, capsys):
    """A detector's rows beside a page run are elements: a page's label (by image_id) is not
    every element's true class, even when it names one of the detector's classes."""
    from probhook import ProbBuffer
    from probhook.sink import FileSink

    pages = FileSink(tmp_path / "run.parquet")
    buffer = ProbBuffer(2, 10, labels=["letter", "invoice"], columns={"image_id": "str"},
                        sink=pages)  # fmt: skip
    buffer.append_batch(np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), keys=["p1", "p2"],
                        image_id=["p1", "p2"])  # fmt: skip
    pages.close()
    write_elements(tmp_path / "run.layout.parquet",
                   [[0.5, 0.3, 0.2], [0.2, 0.1, 0.7], [0.3, 0.6, 0.1]], [1, 1, 2],
                   image_ids=["p1", "p1", "p2"])  # fmt: skip
    labels = write_labels(tmp_path / "labels.csv", ["image_id", "label"],
                          [("p1", "letter"), ("p2", "invoice")])  # fmt: skip
    html = tmp_path / "r.html"
    run = str(tmp_path / "run.parquet")
    assert main(["report", run, "--labels", str(labels), "-o", str(html)]) == 0
    lines = capsys.readouterr().out.splitlines()
    layout = next(x for x in lines if x.startswith("run.layout:"))
    assert layout.startswith("run.layout: 3 elements;")
    assert "measured" not in layout
    assert "measured 1.000" in next(x for x in lines if x.startswith("run:"))
    assert "least confident elements" in html.read_text(encoding="utf-8")
    # a page labelled with a detector's class: not a page class, and not its elements' truth
    labels = write_labels(tmp_path / "table.csv", ["image_id", "label"], [("p1", "table")])
    assert main(["report", run, "--labels", str(labels), "-o", str(tmp_path / "t.html")]) == 2
    assert "name classes the classifier does not have: 'table'" in capsys.readouterr().err


def test_a_killed_run_is_reported_with_every_head_it_streamed(tmp_path, capsys):
    """A run killed before it finished left only the streams ``run.parquet.partial.arrows``
    and ``run.layout.parquet.partial.arrows``: both heads are reported, each with a warning."""
    from probhook import ProbBuffer
    from probhook.elements import ELEMENT_COLUMNS
    from probhook.sink import FileSink

    sinks = [FileSink(tmp_path / "run.parquet"), FileSink(tmp_path / "run.layout.parquet")]
    pages = ProbBuffer(2, 10, labels=["letter", "invoice"], sink=sinks[0])
    pages.append_batch(np.array([[0.9, 0.1]], np.float32), keys=["p1"])
    elements = ProbBuffer(3, 10, labels=["table", "figure", "no_object"],
                          columns=ELEMENT_COLUMNS, sink=sinks[1])  # fmt: skip
    elements.append_batch(np.array([[0.5, 0.3, 0.2], [0.3, 0.6, 0.1]], np.float32),
                          keys=["e1", "e2"], category_id=[1, 2], activation="softmax",
                          category=["table", "figure"], discarded="")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run.layout.parquet.partial.arrows", "run.parquet.partial.arrows"]  # fmt: skip
    with pytest.warns(RuntimeWarning, match="run.layout.parquet was never finished"):
        assert main(["report", str(tmp_path / "run.parquet"), "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "run: 1 rows" in out
    assert "run.layout: 2 elements" in out


def test_a_run_killed_before_its_first_row_holds_no_rows(tmp_path, capsys):
    """Killed while the model loaded: only empty streams are left, so the run holds no rows
    (exit 1), as a run that classified nothing."""
    for name in ("run.parquet.partial.arrows", "run.layout.parquet.partial.arrows"):
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="never finished"):
        assert main(["report", str(tmp_path / "run.parquet"), "-o", str(tmp_path / "r.html")]) == 1
    assert "holds no row" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_the_review_queue_ranks_an_element_by_its_own_class_not_by_no_object(tmp_path, capsys):
    """An element stored as a table at 0.2 with "no object" at 0.7 heads the queue at 0.2."""
    from probhook.report_data import gather

    run = write_elements(tmp_path / "run.parquet",
                         [[0.5, 0.4, 0.1], [0.2, 0.1, 0.7], [0.3, 0.6, 0.1]], [1, 1, 2],
                         image_ids=["p1", "p1", "p2"])  # fmt: skip
    (head,) = gather(run)
    assert [(r["predicted"], round(r["confidence"], 6)) for r in head.queue] == [
        ("table", 0.2), ("table", 0.5), ("figure", 0.6)]  # fmt: skip
    assert head.estimate.accuracy == pytest.approx((0.5 + 0.2 + 0.6) / 3, rel=1e-6)
