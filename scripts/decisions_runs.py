"""Two weeks of documents for docs/decisions.md, classified by the shipped demo model.

    python scripts/decisions_runs.py OUT_DIR          # a few minutes on a 2-core CPU

Documents come from probhook.demo.synth (the generator the demo model was trained on), so their
true class is known. ``reference.parquet``: last month, 4,000 documents, classes balanced, a few
deliberately ambiguous ones. ``current.parquet``: this week, 4,000 documents, twice as many
invoices, more ambiguous documents (a letter quoting an invoice: true class letter) and pages
that mix two documents (the "mixture" pages the model was taught to hedge on; true class: the
one most of the words come from). Each row carries ``file_name``, ``page_number`` and ``kind``
(clean / ambiguous / mixture). Also written: ``reference-labels.csv`` and
``current-labels.csv`` (every row's true class, ``key,label``), ``current-checked.csv`` (the
1,500 rows a person checked this week: the calibration set of the review rule) and
``demo-labels.csv`` (the true class of each page of the shipped sample PDFs, by file and page).
"""

import argparse
import csv
import random
from pathlib import Path

import torch
from transformers import LayoutLMForSequenceClassification

from probhook import capture_probs
from probhook.demo import MODEL_DIR, encode, load_tokenizer
from probhook.demo.synth import AMBIGUOUS_KINDS, LABELS, Document, ambiguous, generate, mixture

BATCH = 64
DEMO_PAGES = [
    ("ambiguous_invoice_as_letter.pdf", 1, "invoice"),
    ("ambiguous_letter_quoting_invoice.pdf", 1, "letter"),
    ("ambiguous_memo_with_form.pdf", 1, "memo"),
    ("form_1.pdf", 1, "form"), ("form_2.pdf", 1, "form"),
    ("invoice_1.pdf", 1, "invoice"), ("invoice_2.pdf", 1, "invoice"),
    ("letter_1.pdf", 1, "letter"), ("letter_2.pdf", 1, "letter"),
    ("letter_and_invoice.pdf", 1, "letter"), ("letter_and_invoice.pdf", 2, "invoice"),
    ("memo_1.pdf", 1, "memo"), ("memo_2.pdf", 1, "memo"),
]  # fmt: skip
"""The sample PDFs' pages and the class each was made as (scripts/make_demo_pdfs.py)."""


def documents(n, shares, ambiguous_share, mixture_share, seed):
    """``n`` documents: ``(doc, kind)`` with classes drawn by ``shares``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = rng.random()
        if u < ambiguous_share:
            out.append((ambiguous(rng.choice(AMBIGUOUS_KINDS), rng), "ambiguous"))
        elif u < ambiguous_share + mixture_share:
            doc, words = mixture(rng)  # true class: the one most of its words come from
            out.append((Document(max(words, key=words.get), doc.lines), "mixture"))
        else:
            out.append((generate(rng.choices(LABELS, shares)[0], rng), "clean"))
    return out


def classify(docs, name, path):
    """Rows of the demo model for ``docs``, written to ``path``; returns keys and labels."""
    tokenizer = load_tokenizer()
    model = LayoutLMForSequenceClassification.from_pretrained(MODEL_DIR).eval()
    model.config.id2label = dict(enumerate(LABELS))
    keys = [f"{name}-{i:05d}" for i in range(len(docs))]
    with capture_probs(model, capacity=len(docs), sink=path) as cap, torch.no_grad():
        for start in range(0, len(docs), BATCH):
            part = docs[start : start + BATCH]
            inputs = encode([d for d, _ in part], tokenizer)
            for i, (_, kind) in enumerate(part):
                with cap.key(keys[start + i], file_name=f"{keys[start + i]}.pdf", page_number=1,
                             kind=kind):  # fmt: skip
                    model(**{k: v[i : i + 1] for k, v in inputs.items()})
    return keys, [d.label for d, _ in docs]


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--documents", type=int, default=4000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    weeks = {
        "reference": documents(args.documents, [1, 1, 1, 1], 0.03, 0.03, seed=11),
        "current": documents(args.documents, [1, 2, 1, 1], 0.08, 0.10, seed=12),
    }
    for name, docs in weeks.items():
        keys, labels = classify(docs, name, args.out / f"{name}.parquet")
        write_csv(args.out / f"{name}-labels.csv", ["key", "label"], zip(keys, labels, strict=True))
        if name == "current":
            checked = sorted(random.Random(13).sample(range(len(keys)), 1500))
            write_csv(args.out / "current-checked.csv", ["key", "label"],
                      [(keys[i], labels[i]) for i in checked])  # fmt: skip
    write_csv(args.out / "demo-labels.csv", ["file_name", "page_number", "label"], DEMO_PAGES)
    print(f"wrote {sorted(p.name for p in args.out.iterdir())}")


if __name__ == "__main__":
    main()
