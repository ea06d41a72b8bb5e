"""Pages per second of a real deepdoctection pipeline with and without capture_probs.

A tiny LayoutLM (hidden 32, 2 layers) and a base-size one (hidden 768, 12 layers, 512 tokens,
random weights), each run over the same synthetic pages. Within a repeat, capture on and off
alternate in short blocks and each keeps its fastest block: noise only ever adds time, and the
capture's own cost is far below this machine's run-to-run noise.
"""

import contextlib
import tempfile
import time

from _common import parse_args, ratio_stats, report

from probhook.testing import build_model, make_pages, make_pipe, offline_environment, run_pipe

offline_environment()
from probhook import capture_probs  # noqa: E402

args = parse_args(__doc__)
# (name, model options, pages per block, blocks per mode and repeat, repeats)
configs = [
    ("tiny LayoutLM", {}, 16, 4, 7 if args.quick else 21),
    ("base LayoutLM", {"hidden_size": 768, "num_layers": 12, "max_length": 512},
     1, 2, 5 if args.quick else 15),
]  # fmt: skip
rows, raw = [], {}
workdir = tempfile.TemporaryDirectory()  # a base-size model is ~450 MB: removed at exit
for name, options, n_pages, blocks, repeats in configs:
    model = build_model("layoutlm", f"{workdir.name}/{name.split()[0]}", **options)
    pipe = make_pipe(model)
    pages = make_pages(n_pages, n_documents=2, words_per_page=200)
    run_pipe(pipe, pages[:1])  # warm-up (analyze() switches timers on at first use)
    cap = capture_probs(pipe)
    times = {"off": [], "on": []}
    for r in range(repeats):
        best = {"off": float("inf"), "on": float("inf")}
        for b in range(blocks):
            for mode in ("off", "on") if (r + b) % 2 == 0 else ("on", "off"):
                ctx = cap if mode == "on" else contextlib.nullcontext()
                start = time.perf_counter()
                with ctx:
                    run_pipe(pipe, pages)
                best[mode] = min(best[mode], time.perf_counter() - start)
        for mode, t in best.items():
            times[mode].append(t)
    ratio = ratio_stats(times["off"], times["on"])  # throughput(on) / throughput(off)
    rows.append({
        "model": name, "pages/block": n_pages, "repeats": repeats,
        "pages/s off": n_pages / sorted(times["off"])[len(times["off"]) // 2],
        "pages/s on": n_pages / sorted(times["on"])[len(times["on"]) // 2],
        "throughput on/off": ratio["median"], "q1": ratio["q1"], "q3": ratio["q3"],
    })  # fmt: skip
    raw[name] = times
report("pipeline", rows, {"goal": ">= 0.98", "seconds": raw})
