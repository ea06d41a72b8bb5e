"""Pages per second of a real deepdoctection token-classification pipeline with and without
per-word capture, and memory over a long run.

Tiny token classifiers (LayoutLM and the text-only BERT wrapper, 64-token windows,
``sliding_window_stride=16``) label pages of 200 words: five or more windows per page, one row
per word. Within a repeat, capture on and off alternate in short blocks and each keeps its
fastest block (noise only ever adds time); every block gets fresh pages, made beforehand
(deepdoctection does not tag a word twice). The memory part runs many pages through a capture of
capacity 2,000 word rows, and as many without a capture, and compares the growth of the process's
memory after the ring is full.
"""

import contextlib
import gc
import os
import tempfile
import time
import tracemalloc

import psutil
from _common import parse_args, ratio_stats, report

from probhook.testing import (
    build_token_model,
    make_token_pages,
    make_token_pipe,
    offline_environment,
    run_pipe,
)

offline_environment()
os.environ.setdefault("LOG_LEVEL", "ERROR")  # deepdoctection logs every page otherwise
from probhook import capture_probs  # noqa: E402

args = parse_args(__doc__)
n_pages, blocks, repeats = 8, 3, (5 if args.quick else 15)
workdir = tempfile.TemporaryDirectory()
rows, raw = [], {}
for kind in ("layoutlm", "bert"):
    pipe = make_token_pipe(build_token_model(kind, f"{workdir.name}/{kind}"),
                           sliding_window_stride=16)  # fmt: skip
    run_pipe(pipe, make_token_pages(1, seed=0))  # warm-up (analyze() switches timers on)
    cap = capture_probs(pipe, capacity=20_000)
    times = {"off": [], "on": []}
    for r in range(repeats):
        best = {"off": float("inf"), "on": float("inf")}
        for b in range(blocks):
            for mode in ("off", "on") if (r + b) % 2 == 0 else ("on", "off"):
                ctx = cap if mode == "on" else contextlib.nullcontext()
                pages = make_token_pages(n_pages, words_per_page=200, seed=1000 * r + 10 * b)
                start = time.perf_counter()
                with ctx:
                    run_pipe(pipe, pages)
                best[mode] = min(best[mode], time.perf_counter() - start)
        for mode, t in best.items():
            times[mode].append(t)
    ratio = ratio_stats(times["off"], times["on"])  # throughput(on) / throughput(off)
    rows.append({
        "model": f"tiny {kind} tokens", "pages/block": n_pages, "words/page": 200,
        "repeats": repeats,
        "pages/s off": n_pages / sorted(times["off"])[len(times["off"]) // 2],
        "pages/s on": n_pages / sorted(times["on"])[len(times["on"]) // 2],
        "throughput on/off": ratio["median"], "q1": ratio["q1"], "q3": ratio["q3"],
    })  # fmt: skip
    raw[kind] = times

# memory: capacity 2,000 word rows, many pages of 100 words, fresh pages each block
pipe = make_token_pipe(
    build_token_model("layoutlm", f"{workdir.name}/mem"), sliding_window_stride=16
)
cap = capture_probs(pipe, capacity=2_000)
proc = psutil.Process()
n_blocks = 10 if args.quick else 40


def growth(ctx, first_seed):
    """RSS and Python-heap growth over ``n_blocks`` blocks of 10 pages, after 3 warm-up blocks."""
    for i in range(3):  # warm-up: fills the ring (3,000 rows) and deepdoctection's caches
        with ctx:
            run_pipe(pipe, make_token_pages(10, words_per_page=100, seed=first_seed + i))
    gc.collect()
    tracemalloc.start()
    rss0, traced0 = proc.memory_info().rss, tracemalloc.get_traced_memory()[0]
    for i in range(3, 3 + n_blocks):
        with ctx:
            run_pipe(pipe, make_token_pages(10, words_per_page=100, seed=first_seed + i))
    gc.collect()
    rss1, traced1 = proc.memory_info().rss, tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (rss1 - rss0) / 1e6, (traced1 - traced0) / 1e6


rss_off, traced_off = growth(contextlib.nullcontext(), 10_000)
rss_on, traced_on = growth(cap, 20_000)
memory = {
    "pages": 10 * n_blocks, "word rows": 1000 * n_blocks, "kept": len(cap),
    "evicted": cap.evicted, "buffer (MB)": cap.nbytes / 1e6,
    "rss growth on (MB)": rss_on, "rss growth off (MB)": rss_off,
    "traced growth on (MB)": traced_on, "traced growth off (MB)": traced_off,
}  # fmt: skip
print("\nmemory over a long run:", {k: round(v, 2) for k, v in memory.items()})
report("tokens", rows, {"goal": ">= 0.98", "seconds": raw, "memory": memory})
