"""Ring-buffer appends against the physical limit (numpy.copyto) and against a deque."""

import collections

import numpy as np
from _common import interleaved, parse_args, ratio_stats, report

from probhook import ProbBuffer

args = parse_args(__doc__)
repeats = 7 if args.quick else 21
C, CAP, BATCH = 16, 100_000, 4096
rng = np.random.default_rng(0)
batch = rng.random((BATCH, C), dtype=np.float32)
row = batch[0]

buf = ProbBuffer(C, CAP)
target = np.zeros((CAP, C), np.float32)
pos = [0]


def copyto():
    p = pos[0]
    n = min(BATCH, CAP - p)
    np.copyto(target[p : p + n], batch[:n])
    if n < BATCH:
        np.copyto(target[: BATCH - n], batch[n:])
    pos[0] = (p + BATCH) % CAP


dq = collections.deque(maxlen=CAP)
batch_t = interleaved(
    {"probhook": lambda: buf.append_batch(batch), "copyto": copyto}, repeats, number=200
)
single, hooked = ProbBuffer(C, CAP), ProbBuffer(C, CAP)
meta = {"key": "page-1"}
row_t = interleaved(
    {
        "probhook": lambda: single.append(row),
        "hook row": lambda: hooked.append(row, key="page-1", head="head", meta=meta),  # as a hook
        "deque": lambda: dq.append(row.copy()),
    },
    repeats,
    number=20_000,
)
throughput = ratio_stats(batch_t["copyto"], batch_t["probhook"])  # >1 would beat copyto
single_ratio = ratio_stats(row_t["probhook"], row_t["deque"])
hook_ratio = ratio_stats(row_t["hook row"], row_t["deque"])
rows = [
    {
        "measure": f"batch append throughput ({BATCH}x{C}) / numpy.copyto",
        "median": throughput["median"], "q1": throughput["q1"], "q3": throughput["q3"],
        "goal": ">= 0.5",
    },
    {
        "measure": "single-row append time / deque(maxlen).append(row.copy())",
        "median": single_ratio["median"], "q1": single_ratio["q1"], "q3": single_ratio["q3"],
        "goal": "<= 2",
    },
    {
        "measure": "hook row append (key + head) / deque(maxlen).append(row.copy())",
        "median": hook_ratio["median"], "q1": hook_ratio["q1"], "q3": hook_ratio["q3"],
        "goal": "",
    },
]  # fmt: skip
report("buffer", rows, {"seconds": {"batch": batch_t, "single": row_t}})
