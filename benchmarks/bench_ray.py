"""Pages per second: the local engine against the Ray engine with 1 and 2 workers, same documents,
same run.

Each variant is a fresh process running the real entry point (``probhook run``'s local loop,
``probhook.integrations.ray.run`` with a local Ray instance of 2 CPUs), once on 1 document and
once on the whole corpus (copies of the demo PDFs). The 1-document run is the fixed cost (imports,
model load, Ray start, worker start); the difference between the two runs is the per-page cost:
``marginal pages/s = (pages(N) - pages(1)) / (time(N) - time(1))``. Variants alternate within a
repeat so that machine noise hits all of them alike.

Ray gives each worker ``OMP_NUM_THREADS=1`` (its one CPU), where the local engine's torch uses
every core: the variant "local, 1 thread" runs the local engine with ``OMP_NUM_THREADS=1`` too.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import parse_args, report

from probhook import demo

CHILD = r"""
import json, sys, time
from pathlib import Path
start = time.perf_counter()
engine, docs, out = sys.argv[1], [Path(p) for p in json.loads(sys.argv[2])], Path(sys.argv[3])
if engine == "local":
    from probhook.cli import main
    assert main(["run", *map(str, docs), "--out", str(out / "rows.parquet"), "--quiet"]) == 0
    import probhook
    pages = len(probhook.load(out / "rows.parquet"))
else:
    from probhook import demo
    from probhook.integrations.ray import run
    summary = run(docs, model_dir=demo.MODEL_DIR, out=out / "rows", workers=int(engine),
                  quiet=True)
    pages = summary.pages
print(json.dumps({"pages": pages, "seconds": time.perf_counter() - start}))
"""


def run_variant(engine, docs, workdir):
    out = Path(tempfile.mkdtemp(dir=workdir))
    env = dict(os.environ)
    if engine == "local-1":
        engine, env["OMP_NUM_THREADS"] = "local", "1"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, engine, json.dumps([str(d) for d in docs]), str(out)],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    args = parse_args(__doc__)
    copies, repeats = (2, 1) if args.quick else (4, 3)
    workdir = tempfile.mkdtemp(prefix="bench-ray-")
    try:
        corpus = Path(workdir) / "corpus"
        corpus.mkdir()
        for copy in range(copies):
            for pdf in sorted(demo.SAMPLES_DIR.glob("*.pdf")):
                shutil.copy(pdf, corpus / f"{pdf.stem}-{copy}.pdf")
        docs = sorted(corpus.glob("*.pdf"))
        engines = {"local": "local", "local, 1 thread": "local-1", "Ray, 1 worker": "1",
                   "Ray, 2 workers": "2"}  # fmt: skip
        runs = {name: {"one": [], "all": []} for name in engines}
        for r in range(repeats):
            order = list(engines.items())[:: -1 if r % 2 else 1]
            for name, engine in order:
                runs[name]["one"].append(run_variant(engine, docs[:1], workdir))
                runs[name]["all"].append(run_variant(engine, docs, workdir))
                print(f"repeat {r}: {name}: {runs[name]['all'][-1]}", flush=True)
        rows = []
        for name, got in runs.items():
            fixed = min(x["seconds"] for x in got["one"])
            total = min(x["seconds"] for x in got["all"])
            pages = got["all"][0]["pages"]
            rows.append({
                "engine": name, "pages": pages, "fixed cost (s)": fixed, "whole run (s)": total,
                "pages/s, whole run": pages / total,
                "pages/s, marginal": (pages - got["one"][0]["pages"]) / max(total - fixed, 1e-9),
            })  # fmt: skip
        local = rows[0]["pages/s, marginal"]
        for row in rows:
            row["marginal vs local"] = row["pages/s, marginal"] / local
        report("ray", rows, {"repeats": repeats, "documents": len(docs), "started": time.time()})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
