"""Shared timing helpers: interleaved on/off repeats, medians and spreads, markdown + JSON."""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(description, device=False):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats (about a minute in all)"
    )
    if device:
        parser.add_argument("--device", default="cpu", help="torch device of the model (cuda)")
    return parser.parse_args()


def interleaved(variants, repeats, number):
    """Time each variant ``number`` times per repeat, alternating variants within each repeat so
    that machine noise hits all of them alike. Returns seconds per call, one list per variant."""
    times = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return times


def ratio_stats(numerator, denominator):
    """Median and quartiles of per-repeat ratios (paired repeats share the same noise)."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator, strict=True))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": statistics.median(ratios), "q1": q[0], "q3": q[2], "n": len(ratios)}


def report(name, rows, extra=None):
    """Print a markdown table of ``rows`` (dicts with the same keys) and write JSON."""
    RESULTS.mkdir(exist_ok=True)
    keys = list(rows[0])
    print(f"\n### {name}\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    payload = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def machine():
    import os

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
