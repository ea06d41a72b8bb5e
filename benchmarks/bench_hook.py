"""Per-forward hook cost: probhook's hook against a minimal hand-written hook and no hook.

The minimal hook does only ``softmax(logits).cpu()`` into a preallocated array (the floor for
any capture); a hook's cost is its forward time minus the hook-less forward time of the same
repeat. Within a repeat the three variants alternate in short blocks and each keeps its fastest
block (as ``timeit`` does): machine noise only ever adds time, and a hook's cost is a small
difference of two forward times.
"""

import contextlib
import time

import numpy as np
import torch
from _common import parse_args, ratio_stats, report

from probhook import capture_probs

args = parse_args(__doc__, device=True)
repeats, rounds, forwards = (9, 5, 200) if args.quick else (31, 10, 200)
torch.manual_seed(0)
torch.set_num_threads(1)
device = torch.device(args.device)
# a cheap forward, so the hook's own cost shows
model = torch.nn.Linear(32, 16).eval().to(device)
x = torch.randn(1, 32, device=device)
sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
floor = np.zeros((10_000, 16), np.float32)
pos = [0]


def minimal_hook(module, inputs, output):
    floor[pos[0] % 10_000] = torch.softmax(output.detach(), -1).cpu().numpy()[0]
    pos[0] += 1


@contextlib.contextmanager
def minimal():
    handle = model.register_forward_hook(minimal_hook)
    yield
    handle.remove()


cap = capture_probs(model, capacity=10_000)  # made once, as the minimal hook's array is
model(x)  # the first captured forward allocates the buffer; it is not a per-forward cost
with cap:
    model(x)


@contextlib.contextmanager
def probhook():
    with cap:
        yield


variants = {"none": contextlib.nullcontext, "minimal": minimal, "probhook": probhook}
times = {name: [] for name in variants}
for r in range(repeats):
    best = dict.fromkeys(variants, float("inf"))
    for k in range(rounds):
        for name in list(variants)[:: 1 if (r + k) % 2 == 0 else -1]:
            with variants[name]():
                sync()
                start = time.perf_counter()
                for _ in range(forwards):
                    model(x)
                sync()  # a hook-less forward on a GPU only queues work
                best[name] = min(best[name], (time.perf_counter() - start) / forwards)
    for name, t in best.items():
        times[name].append(t)
cost = {
    n: [t - b for t, b in zip(times[n], times["none"], strict=True)]
    for n in ("minimal", "probhook")
}
ratio = ratio_stats(cost["probhook"], cost["minimal"])
rows = [
    {"measure": f"{n} forward (us)", "median": float(np.median(t)) * 1e6} for n, t in times.items()
]
rows += [
    {"measure": f"{n} hook cost (us)", "median": float(np.median(c)) * 1e6} for n, c in cost.items()
]
rows.append(
    {"measure": "probhook hook cost / minimal hook cost (goal <= 1.5)", "median": ratio["median"]}
)
name = "hook" if device.type == "cpu" else f"hook-{device.type}"
report(name, rows, {"ratio": ratio, "seconds": times, "device": str(device)})
