"""A head's notebook table on 200,000 rows: only the summary arrays and the latest ten rows are
read, so it costs a small fraction of building every row (same-run ratio)."""

import time

import numpy as np

from probhook import ProbBuffer
from probhook.head_view import HeadView


def median_s(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeat // 2]


def main(n=200_000):
    view = HeadView("clf", buffer=ProbBuffer(4, n, labels=["letter", "invoice", "form", "memo"]))
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=n).astype(np.float32)
    view.buffer.append_batch(probs, keys=[f"k{i}" for i in range(n)])
    table = median_s(view._repr_html_)
    every_row = median_s(lambda: list(view.rows()), repeat=1)
    print(f"_repr_html_ on {n:,} rows: {table * 1e3:.1f} ms")
    ratio = table / every_row
    print(f"building every row: {every_row * 1e3:.0f} ms (table / every row = {ratio:.3f})")


if __name__ == "__main__":
    main()
