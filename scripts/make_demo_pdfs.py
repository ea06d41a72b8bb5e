"""Write the demo's sample PDFs to probhook/demo/samples (deterministic; needs fpdf2).

    pip install fpdf2 && python scripts/make_demo_pdfs.py

Two clear documents of each class, a two-page document (cover letter and invoice), and three
deliberately ambiguous ones (a letter quoting an invoice, a memo with form fields, a payment
reminder written as a letter).
"""

import random
import shutil

from fpdf import FPDF

from probhook.demo import SAMPLES_DIR
from probhook.demo.synth import AMBIGUOUS_KINDS, LABELS, Document, ambiguous, generate


def render(pages: list[Document], path) -> None:
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_creation_date(__import__("datetime").datetime(2025, 1, 1))  # byte-stable output
    pdf.set_auto_page_break(False)
    for doc in pages:
        pdf.add_page()
        for line in doc.lines:
            pdf.set_font("Helvetica", size=line.size)
            pdf.text(line.x, line.y, line.text)
    pdf.output(str(path))


def main() -> None:
    rng = random.Random(7)
    shutil.rmtree(SAMPLES_DIR, ignore_errors=True)
    SAMPLES_DIR.mkdir(parents=True)
    for label in LABELS:
        for i in (1, 2):
            render([generate(label, rng)], SAMPLES_DIR / f"{label}_{i}.pdf")
    render(
        [generate("letter", rng), generate("invoice", rng)], SAMPLES_DIR / "letter_and_invoice.pdf"
    )
    for kind in AMBIGUOUS_KINDS:
        render([ambiguous(kind, rng)], SAMPLES_DIR / f"ambiguous_{kind}.pdf")
    print(f"wrote {len(list(SAMPLES_DIR.glob('*.pdf')))} PDFs to {SAMPLES_DIR}")


if __name__ == "__main__":
    main()
