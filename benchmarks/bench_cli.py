"""Pages per second and peak memory of ``probhook run`` against a bare deepdoctection analyzer.

Both run as fresh processes on the same PDFs (the shipped samples copied until there are at
least 100 pages), with the same model, interleaved (bare, probhook, probhook, bare, ...). The
bare process builds the analyzer exactly as the command line does (``build_analyzer`` without
pixel skipping, the same ``get_dd_analyzer`` configuration), iterates every page and reads its
stored document type, as a plain deepdoctection user would. Measured by this parent process:

- end to end: process start to exit (imports, building the analyzer, every page, writing);
- pages/s while classifying: from the first page's output line to the last page's;
- peak resident memory of the process (``wait4``'s ``ru_maxrss``).

    python benchmarks/bench_cli.py                   # demo LayoutLM (v1) model, 2 rounds
    python benchmarks/bench_cli.py --quick           # 26 pages, 1 round: about a minute
    python benchmarks/bench_cli.py --model v3        # a tiny LayoutLMv3 (reads pixels)
    python benchmarks/bench_cli.py --pages 200 --rounds 1 --profile   # + where the time goes
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine

from probhook import demo


def bare_child(model, docs):
    """The bare analyzer: one line per page on stdout, flushed (the parent times the lines)."""
    from probhook.integrations.deepdoctection.analyzer import (
        build_analyzer,
        quiet_libraries,
        read_model_dir,
    )

    quiet_libraries()
    from dd_core.utils.object_types import DocumentKey

    wrapper, labels = read_model_dir(Path(model))
    analyzer = build_analyzer(Path(model), wrapper, labels, ocr=False, skip_pixels=False)
    for doc in docs:
        flow = analyzer.analyze(path=doc)
        flow.reset_state()
        for page in flow:
            category = page.summary.get_sub_category(DocumentKey.DOCUMENT_TYPE)
            print(page.image_id, category.category_name, category.score, flush=True)


def corpus(folder, min_pages):
    """Copies of the sample PDFs until there are at least ``min_pages`` pages."""
    from pypdf import PdfReader

    samples = sorted(demo.SAMPLES_DIR.glob("*.pdf"))
    pages = {s: len(PdfReader(s).pages) for s in samples}
    docs, total, k = [], 0, 0
    while total < min_pages:
        for s in samples:
            if total >= min_pages:
                break
            docs.append(folder / f"{k:03d}_{s.name}")
            shutil.copyfile(s, docs[-1])
            total += pages[s]
        k += 1
    return docs, total


def timed(cmd, env, page_line):
    """Run ``cmd``; (seconds end to end, seconds from first to last page line, page lines,
    peak RSS in MiB, CPU seconds of the process)."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                             text=True)  # fmt: skip
    stamps = [time.perf_counter() for line in child.stdout if page_line(line)]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    end = time.perf_counter()
    if child.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed with exit status {child.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return end - start, stamps[-1] - stamps[0], len(stamps), usage.ru_maxrss / 1024, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="demo, v3, or a model folder")
    parser.add_argument("--quick", action="store_true", help="26 pages, 1 round (a minute)")
    parser.add_argument("--pages", type=int, help="at least this many pages (default: 100)")
    parser.add_argument("--rounds", type=int, help="each command this many times (default: 2)")
    parser.add_argument("--profile", action="store_true", help="cProfile one probhook run")
    parser.add_argument("--threads", type=int, help="torch threads in both (OMP_NUM_THREADS)")
    parser.add_argument("--bare-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        return bare_child(args.bare_child[0], args.bare_child[1:])
    args.pages = args.pages or (26 if args.quick else 100)  # two copies of the samples
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)

    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {**os.environ, "DEEPDOCTECTION_CACHE": str(work / "dd-cache"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    if args.threads:  # an oversubscribed machine: spinning torch threads dominate otherwise
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.model == "demo":
        model = demo.MODEL_DIR
    elif args.model == "v3":
        from probhook.testing import build_model, offline_environment

        offline_environment(work / "dd-cache")
        model = build_model("layoutlmv3", work / "v3", max_length=128).path
    else:
        model = Path(args.model)
    (work / "in").mkdir()
    docs, pages = corpus(work / "in", args.pages)
    print(f"model {model}; {len(docs)} documents, {pages} pages; machine {machine()}; "
          f"torch threads {args.threads or 'default'}")  # fmt: skip
    bare = [sys.executable, __file__, "--bare-child", str(model), *map(str, docs)]
    cli = [sys.executable, "-m", "probhook", "run", str(work / "in"), "--model", str(model),
           "--out", str(work / "rows.parquet"), "--quiet"]  # fmt: skip
    runs = {"bare": [], "probhook": []}
    for r in range(args.rounds):
        for name in ("bare", "probhook") if r % 2 == 0 else ("probhook", "bare"):
            line = (lambda s: s.count(" ") == 2) if name == "bare" else (lambda s: ".pdf " in s)
            total, classifying, n, rss, cpu = timed(bare if name == "bare" else cli, env, line)
            assert n == pages, (name, n, pages)
            runs[name].append({"end_to_end_s": total, "classifying_s": classifying or 1e-9,
                               "cpu_s": cpu, "rss": rss})  # fmt: skip
            rate = f"{(n - 1) / classifying:6.2f}" if n > 1 else "     -"
            print(f"  round {r} {name:>8}: {total:6.1f} s end to end, {pages / total:5.2f} pages/s;"
                  f" {rate} pages/s classifying; {cpu:6.1f} CPU s; peak RSS {rss:.0f} MiB",
                  flush=True)  # fmt: skip
    if args.rounds:
        best = {k: {m: min(run[m] for run in v) for m in v[0]} for k, v in runs.items()}
        summary = {
            "model": str(model), "pages": pages, "documents": len(docs), "rounds": args.rounds,
            "machine": machine(), "threads": args.threads, "runs": runs, "best": best,
        }  # fmt: skip
        for m in ("end_to_end_s", "classifying_s", "cpu_s"):
            summary[f"speedup_{m[:-2]}"] = best["bare"][m] / best["probhook"][m]
        print(f"best of {args.rounds}: probhook run / bare analyzer = "
              f"{summary['speedup_end_to_end']:.2f}x end to end, "
              f"{summary['speedup_classifying']:.2f}x while classifying, "
              f"{summary['speedup_cpu']:.2f}x in CPU time; peak RSS "
              f"{best['probhook']['rss']:.0f} vs {best['bare']['rss']:.0f} MiB")  # fmt: skip
        RESULTS.mkdir(exist_ok=True)
        name = "demo" if args.model == "demo" else "v3" if args.model == "v3" else "model"
        (RESULTS / f"bench_cli_{name}_{pages}.json").write_text(json.dumps(summary, indent=2))
    if args.profile:
        stats = work / "cli.prof"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "probhook",
                        *cli[3:]], env=env, stdout=subprocess.DEVNULL, check=True)  # fmt: skip
        print(f"\nwhere the time goes (one probhook run under cProfile, "
              f"{time.perf_counter() - start:.1f} s with the profiler's overhead):")  # fmt: skip
        for label, seconds in breakdown(stats).items():
            print(f"  {label:<58} {seconds:7.2f} s")
    shutil.rmtree(work, ignore_errors=True)


# (label, file fragment, function name): cumulative time of the first match (not recursive)
PARTS = [
    ("whole run (probhook.cli.main)", "probhook/cli.py", "main"),
    ("  import deepdoctection", "deepdoctection/__init__.py", "<module>"),
    ("  build the analyzer (get_dd_analyzer, model load)", "deepdoctection/analyzer/dd.py",
     "get_dd_analyzer"),
    ("  PDF: open (pypdf)", "dd_core/utils/pdf_utils.py", "_new_reader"),
    ("  PDF: split into one-page PDFs (pypdf)", "dd_core/utils/pdf_utils.py", "_page_to_bytes"),
    ("  PDF: page size without rendering (pypdfium2)", "deepdoctection/pixels.py",
     "rendered_size"),
    ("  PDF: render to pixels (pypdfium2)", "dd_core/utils/pdf_utils.py",
     "pdf_to_np_array_pdfmium"),
    ("  PDF: text extraction (pdfplumber service)", "deepdoctection/pipe/text.py", "serve"),
    ("  word matching service", "deepdoctection/pipe/common.py", "serve"),
    ("  reading order service", "deepdoctection/pipe/order.py", "serve"),
    ("  LM service (features + model)", "deepdoctection/pipe/lm.py", "serve"),
    ("    model forward (torch)", "torch/nn/modules/module.py", "_call_impl"),
    ("    probhook forward hook", "probhook/recording.py", "on_forward"),
    ("  dd Page objects for the caller", "dd_core/datapoint/view.py", "from_image"),
    ("  probhook: result lines", "probhook/cli_output.py", "line"),
    ("  probhook: sink writes", "probhook/sink.py", "write"),
    ("  probhook: derived Parquet columns at the end", "probhook/cli_output.py",
     "finish_rows_file"),
]  # fmt: skip


def breakdown(path):
    """Cumulative seconds of the functions in :data:`PARTS` in a cProfile file."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    found = {}
    for label, fragment, function in PARTS:
        times = [v[3] for (f, _, name), v in stats.items()
                 if f.replace(os.sep, "/").endswith(fragment) and name == function]  # fmt: skip
        if times:
            found[label] = max(times)
    return found


if __name__ == "__main__":
    main()
