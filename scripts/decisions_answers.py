"""The numbers of docs/decisions.md: the three questions, answered on the demo run and on the two
weeks of scripts/decisions_runs.py, with the true answers beside them (every row's class is
known there).

    probhook demo --out demo.parquet
    python scripts/decisions_runs.py runs/
    python scripts/decisions_answers.py runs/ demo.parquet [--screenshot docs/img/report.png]
"""

import argparse
import contextlib
import csv
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import probhook
from probhook.cli import main as cli

MAX_ERROR, DELTA = 0.01, 0.05


def truth(path):
    with open(path, encoding="utf-8") as f:
        return {row["key"]: row["label"] for row in csv.DictReader(f)}


def accuracy(view, labels):
    return float(np.mean(np.array(view.labels)[view.probs.argmax(axis=1)] == np.array(labels)))


def demo(runs, run):
    print("## the demo run")
    view = probhook.load(run)
    with open(runs / "demo-labels.csv", encoding="utf-8") as f:
        pages = {(r["file_name"], int(r["page_number"])): r["label"] for r in csv.DictReader(f)}
    docs = [Path(str(loc)).name for loc in view.column("location")]
    labels = [pages[(d, int(n))] for d, n in zip(docs, view.column("page_number"), strict=True)]
    print(view.estimate_accuracy(), "| measured", accuracy(view, labels), f"on {len(view)} pages")
    print(probhook.compare(runs / "reference.parquet", run))
    print(view.review_threshold(labels, MAX_ERROR, DELTA))


def weeks(runs):
    print("## the two weeks")
    ref, cur = probhook.load(runs / "reference.parquet"), probhook.load(runs / "current.parquet")
    ref_truth, cur_truth = truth(runs / "reference-labels.csv"), truth(runs / "current-labels.csv")
    ref_labels = [ref_truth[k] for k in ref.keys]
    cur_labels = [cur_truth[k] for k in cur.keys]
    print(
        "true accuracy: reference", accuracy(ref, ref_labels), "current", accuracy(cur, cur_labels)
    )
    print("reference", ref.estimate_accuracy())
    for method in (None, "temperature", "isotonic"):
        on = None if method is None else (ref, ref_labels)
        est = cur.estimate_accuracy(on, method=method or "temperature")
        print(f"current, calibration {method}:", est)
    by_kind = cur.estimate_accuracy(by="kind")
    kinds = cur.column("kind")
    for kind, est in by_kind.groups.items():
        mask = kinds == kind
        true = float(np.mean(np.array(cur.labels)[cur.probs[mask].argmax(1)] ==
                             np.array(cur_labels)[mask]))  # fmt: skip
        print(f"  {kind}: {est} | true {true:.3f}")
    print(by_kind.classes_to_pandas().round(3).to_string())
    drift = probhook.compare(ref, cur)
    print(drift)
    checked = truth(runs / "current-checked.csv")
    rows = np.array([k in checked for k in cur.keys])
    targets = cur.target_indices(cur_labels)
    p = cur.probs.astype(np.float64)
    from probhook.review import review_threshold

    rule = review_threshold(p[rows], targets[rows], MAX_ERROR, DELTA, labels=cur.labels)
    print(rule)
    rest = ~rows
    accepted = p[rest].max(axis=1) >= rule.min_confidence
    wrong = p[rest][accepted].argmax(axis=1) != targets[rest][accepted]
    review = int((p.max(axis=1) < rule.min_confidence).sum())
    print(f"the other {rest.sum()} rows: {accepted.mean():.1%} accepted, {wrong.mean():.2%} "
          f"wrong; all {len(p)}: {review} to review")  # fmt: skip


def screenshot(runs, png):
    out = Path(tempfile.mkdtemp()) / "week.html"
    with contextlib.chdir(runs):  # the page names the files as given: short names
        cli(["report", "current.parquet", "--reference", "reference.parquet",
             "--labels", "current-checked.csv", "--max-error", str(MAX_ERROR),
             "--queue", "12", "-o", str(out)])  # fmt: skip
    chromium = shutil.which("chromium")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png.resolve()}", "--window-size=1440,1900", out.as_uri()],
                   check=True, capture_output=True)  # fmt: skip
    print(f"screenshot: {png}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    parser.add_argument("demo", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    demo(args.runs, args.demo)
    weeks(args.runs)
    if args.screenshot:
        screenshot(args.runs, args.screenshot)
