"""Element rows as a detector's sink file holds them, written without a detector: for the tests of
what reads runs (the report, the decisions)."""

import numpy as np

from probhook import ProbBuffer
from probhook.elements import ELEMENT_COLUMNS
from probhook.sink import FileSink

LABELS = ["table", "figure", "no_object"]
NAMES = dict(enumerate(LABELS, start=1))


def write_elements(path, probs, category_ids, *, image_ids, discarded="", activation="softmax"):
    """One element row per row of ``probs`` (classes table, figure, then no_object), keyed e1,
    e2, ...; returns ``path``."""
    sink = FileSink(path)
    buffer = ProbBuffer(len(LABELS), 10, labels=LABELS,
                        columns={**ELEMENT_COLUMNS, "image_id": "str"}, sink=sink)  # fmt: skip
    buffer.append_batch(np.asarray(probs, np.float32),
                        keys=[f"e{i + 1}" for i in range(len(category_ids))],
                        category_id=category_ids, category=[NAMES[c] for c in category_ids],
                        activation=activation, discarded=discarded, image_id=image_ids)  # fmt: skip
    sink.close()
    return path
