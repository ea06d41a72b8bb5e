"""Memory while capturing 1,000,000 rows with capacity 10,000, next to a naive list capture."""

import gc
import tracemalloc

import psutil
import torch
from _common import parse_args, report

from probhook import capture_probs

args = parse_args(__doc__)
total, batch, capacity, C = (200_000 if args.quick else 1_000_000), 100, 10_000, 16
torch.manual_seed(0)
model = torch.nn.Linear(8, C).eval()
x = torch.randn(batch, 8)
proc = psutil.Process()


def measure(run_batches, label):
    gc.collect()
    tracemalloc.start()
    run_batches(2 * capacity // batch)  # warm-up: fills the ring buffer once
    gc.collect()
    rss0, traced0 = proc.memory_info().rss, tracemalloc.get_traced_memory()[0]
    run_batches(total // batch)
    gc.collect()
    rss1, traced1 = proc.memory_info().rss, tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"capture": label, "rss growth (MB)": (rss1 - rss0) / 1e6,
            "traced growth (MB)": (traced1 - traced0) / 1e6}  # fmt: skip


cap = capture_probs(model, capacity=capacity)
counter = [0]


def probhook_batches(n):
    with cap:
        for _ in range(n):
            with cap.key(counter[0]):
                model(x)
            counter[0] += 1


naive = []


def naive_hook(module, inputs, output):
    naive.append(torch.softmax(output.detach(), -1))


def naive_batches(n):
    handle = model.register_forward_hook(naive_hook)
    with torch.no_grad():
        for _ in range(n):
            model(x)
    handle.remove()


with torch.no_grad():
    rows = [measure(probhook_batches, "probhook"), measure(naive_batches, "list of tensors")]
nbytes = cap.buffer.nbytes
rows[0]["bytes per retained row"] = nbytes / len(cap)
rows[1]["bytes per retained row"] = float("nan")
rows[0]["growth / buffer nbytes"] = rows[0]["rss growth (MB)"] * 1e6 / nbytes
rows[1]["growth / buffer nbytes"] = rows[1]["rss growth (MB)"] * 1e6 / nbytes
report("memory", rows, {"rows": total, "capacity": capacity, "buffer_nbytes": nbytes})
