"""This checkout against an earlier commit, in one process: the write path, the hook, and a
token head's capture (a tiny BERT token classifier, one row per word, 64 forwards then a read).

The earlier commit's package is unpacked with ``git archive`` into a temporary folder under
another name (``probhook_base``), so both versions run side by side and every repeat times them
back to back: machine noise hits both alike. Ratios above 1 mean this checkout is slower.

    python benchmarks/bench_versions.py --base 0509a9a
"""

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import ratio_stats, report

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--base", default="0509a9a", help="the earlier commit (default: 0509a9a)")
parser.add_argument("--quick", action="store_true", help="fewer repeats")
args = parser.parse_args()

workdir = tempfile.TemporaryDirectory()
archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "probhook"],
                         capture_output=True, check=True).stdout  # fmt: skip
with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    tar.extractall(workdir.name, filter="data")
base_dir = Path(workdir.name) / "probhook_base"
(Path(workdir.name) / "probhook").rename(base_dir)
for path in base_dir.rglob("*.py"):  # the earlier package imports itself under its new name
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("probhook", "probhook_base"), encoding="utf-8")
sys.path.insert(0, workdir.name)
import probhook_base  # noqa: E402

import probhook  # noqa: E402

torch.set_num_threads(1)
C, CAP = 16, 10_000
row = np.random.default_rng(0).random(C, dtype=np.float32)
batch = np.random.default_rng(1).random((4096, C), dtype=np.float32)
meta = {"key": "page-1"}
model = torch.nn.Linear(32, 16).eval()
x = torch.randn(1, 32)


def best(fn, number, tries=3):
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def hook_row(buffer):  # what each version's forward hook calls for one row
    if hasattr(buffer, "append_row"):
        return lambda: buffer.append_row(row, meta, "head")
    return lambda: buffer.append(row, "page-1", "head", meta)


cases = {}
for name, package in (("new", probhook), ("base", probhook_base)):
    single, batched, hooked = (package.ProbBuffer(C, CAP) for _ in range(3))
    cases[name] = {
        "single-row append": (lambda b=single: b.append(row), 20_000),
        "batch append (4096 x 16)": (lambda b=batched: b.append_batch(batch), 200),
        "hook row write": (hook_row(hooked), 20_000),
    }
from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast  # noqa: E402

vocab = Path(workdir.name) / "vocab.txt"
vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *(f"w{i}" for i in range(60))]))
tokenizer = BertTokenizerFast(vocab=str(vocab), model_max_length=128)
token_model = BertForTokenClassification(
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32, num_labels=7, max_position_embeddings=128)
).eval()  # fmt: skip
encoding = tokenizer([" ".join(f"w{i % 60}" for i in range(100))], return_tensors="pt")


def token_block(cap=None):
    with torch.no_grad():
        for _ in range(64):
            if cap is None:
                token_model(**encoding)
            else:
                with cap.tokens(encoding):
                    token_model(**encoding)
    if cap is not None:
        len(cap)  # the staged forwards are mapped inside the timing


repeats = 7 if args.quick else 21
times = {side: {measure: [] for measure in cases["new"]} for side in ("new", "base")}
hook = {"new": [], "base": [], "none": []}
tokens = {"new": [], "base": [], "none": []}
captures = {"new": probhook.capture_probs(model), "base": probhook_base.capture_probs(model)}
for r in range(repeats):
    for side in ("new", "base") if r % 2 == 0 else ("base", "new"):
        for measure, (fn, number) in cases[side].items():
            times[side][measure].append(best(fn, number))
        with captures[side]:
            hook[side].append(best(lambda: model(x), 300))
        package = probhook if side == "new" else probhook_base
        with package.capture_probs(token_model, capacity=100_000) as cap:
            tokens[side].append(best(lambda cap=cap: token_block(cap), 1))
    hook["none"].append(best(lambda: model(x), 300))
    tokens["none"].append(best(token_block, 1))
rows = []
for measure in cases["new"]:
    ratio = ratio_stats(times["new"][measure], times["base"][measure])
    rows.append({"measure": f"{measure}: this / {args.base}", "median": ratio["median"],
                 "q1": ratio["q1"], "q3": ratio["q3"]})  # fmt: skip
cost = {side: [t - n for t, n in zip(hook[side], hook["none"], strict=True)] for side in hook}
ratio = ratio_stats(cost["new"], cost["base"])
rows.append({"measure": f"hook cost per forward: this / {args.base}", "median": ratio["median"],
             "q1": ratio["q1"], "q3": ratio["q3"]})  # fmt: skip
cost = {side: [t - n for t, n in zip(tokens[side], tokens["none"], strict=True)] for side in tokens}
ratio = ratio_stats(cost["new"], cost["base"])
rows.append({"measure": f"token capture cost per 64 forwards: this / {args.base}",
             "median": ratio["median"], "q1": ratio["q1"], "q3": ratio["q3"]})  # fmt: skip
report("versions", rows, {"base": args.base})
