"""Decisions at scale: 10 million rows of 4 classes in a folder of Parquet files (as the Ray engine
writes them), a reference run of the same size beside it; time and peak memory of
``probhook.compare``, ``estimate_accuracy`` and ``probhook report``, each in a fresh process.

The baseline, run in the same way, is a process that only reads the probability columns of the
folder with pyarrow (the least any answer needs): the ratios say what the statistics add. Each
task runs twice (once with --quick): the shorter time, the larger peak.

    python benchmarks/bench_decisions.py            # 10M + 10M rows (about 1.5 GB of files)
    python benchmarks/bench_decisions.py --quick    # 1M + 1M rows
"""

import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import parse_args, report

ROWS_PER_FILE = 1_000_000
LABELS = ("letter", "invoice", "form", "memo")

TASKS = {
    "read p_ columns (pyarrow, baseline)": """
import pyarrow.dataset as pds
ds = pds.dataset(REF, format="parquet")
n = 0
for b in ds.to_batches(columns=[f"p_{l}" for l in LABELS], batch_size=1 << 19):
    n += b.num_rows
ds = pds.dataset(CUR, format="parquet")
for b in ds.to_batches(columns=[f"p_{l}" for l in LABELS], batch_size=1 << 19):
    n += b.num_rows
out = {"rows": n}
""",
    "probhook.compare(reference, current)": """
import probhook
d = probhook.compare(REF, CUR)
out = {"rows": d.reference.n + d.current.n, "ks_exact": d.confidence.ks.exact,
       "ks": d.confidence.ks.statistic, "chi2_p": d.class_shares.pvalue}
""",
    "compare, KS from the grid (exact_rows=0)": """
import probhook
d = probhook.compare(REF, CUR, exact_rows=0)
out = {"rows": d.reference.n + d.current.n, "ks_exact": d.confidence.ks.exact,
       "ks": d.confidence.ks.statistic, "ks_upper": d.confidence.ks.statistic_upper}
""",
    "estimate_accuracy(current, by='file_name')": """
from probhook.estimate import estimate_accuracy
e = estimate_accuracy(CUR, by="file_name")
out = {"rows": e.n, "groups": len(e.groups), "accuracy": e.accuracy}
""",
    "probhook report current --reference reference": """
from probhook.cli import main
assert main(["report", CUR, "--reference", REF, "-o", OUT]) == 0
out = {"rows": None}
""",
}


def write_run(folder, n_rows, shift, seed):
    """``n_rows`` rows of 4 classes in files of ROWS_PER_FILE, with probhook's columns."""
    import pyarrow.parquet as pq

    from probhook.arrow import rows_to_arrow
    from probhook.block import RowBlock

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    schema = {"key": "str", "head": "str", "image_id": "str", "file_name": "str",
              "page_number": "int"}  # fmt: skip
    for f in range(n_rows // ROWS_PER_FILE):
        n = ROWS_PER_FILE
        z = rng.normal(size=(n, 4)).astype(np.float32) * np.float32(3.0 - shift)
        z[:, 1] += np.float32(shift)  # the current run: more invoices, less sure
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        keys = np.char.add(f"f{f}-", np.arange(n).astype(str)).astype(object)
        columns = {
            "key": keys, "head": np.full(n, "classifier", object), "image_id": keys,
            "file_name": np.char.add("doc", (np.arange(n) // 8 % 5000).astype(str)).astype(object),
            "page_number": (np.arange(n) % 8 + 1).astype(np.int64),
        }  # fmt: skip
        rows = RowBlock(p, np.arange(n, dtype=np.int64), np.ones(n, bool), columns, LABELS)
        pq.write_table(rows_to_arrow(rows, schema), folder / f"part-{f:03d}.parquet")


def run_task(code, ref, cur, out_html):
    prelude = (f"REF, CUR, OUT = {str(ref)!r}, {str(cur)!r}, {str(out_html)!r}\n"
               f"LABELS = {LABELS!r}\n")  # fmt: skip
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
    epilogue = (
        "\nimport json\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "out['peak_rss_mb'] = int(hwm.split()[1]) / 1024\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", prelude + code + epilogue], env=env,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main():
    args = parse_args(__doc__)
    n_rows = 1_000_000 if args.quick else 10_000_000
    root = Path(tempfile.mkdtemp(prefix="probhook-bench-decisions-"))
    try:
        start = time.perf_counter()
        write_run(root / "reference", n_rows, 0.0, seed=1)
        write_run(root / "current", n_rows, 0.5, seed=2)
        gc.collect()
        made = time.perf_counter() - start
        size = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 1e6
        print(f"wrote 2 x {n_rows} rows ({size:.0f} MB of Parquet) in {made:.0f} s", flush=True)
        results, baseline = [], None
        repeats = 1 if args.quick else 2
        for name, code in TASKS.items():
            runs = [run_task(code, root / "reference", root / "current", root / "r.html")
                    for _ in range(repeats)]  # fmt: skip
            seconds = min(r[0] for r in runs)  # the least disturbed by the shared machine
            out = {**runs[0][1], "peak_rss_mb": max(r[1]["peak_rss_mb"] for r in runs)}
            baseline = baseline or seconds
            results.append({"task": name, "rows read": 2 * n_rows if "report" in name or
                            "compare" in name or "baseline" in name else n_rows,
                            "seconds": seconds, "x baseline": seconds / baseline,
                            "peak RSS (MB)": out.pop("peak_rss_mb"),
                            "result": json.dumps(out)})  # fmt: skip
            print(results[-1], flush=True)
        report("decisions", results, {"rows_per_run": n_rows, "parquet_mb": size,
                                      "parent_peak_rss_mb": resource.getrusage(
                                          resource.RUSAGE_SELF).ru_maxrss / 1024})  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
