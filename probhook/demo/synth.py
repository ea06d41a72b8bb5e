"""Synthetic business documents (letter, invoice, form, memo) with varied wording and layout.

One generator feeds both the demo classifier's training data and the sample PDFs, so that the
words and boxes the model learns from are those deepdoctection extracts from the PDFs.

Examples:
    >>> import random
    >>> from probhook.demo.synth import generate, words_and_boxes
    >>> doc = generate("invoice", random.Random(0))
    >>> words, boxes = words_and_boxes(doc)
    >>> doc.label, len(words) == len(boxes), all(0 <= v <= 1000 for b in boxes for v in b)
    ('invoice', True, True)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

LABELS = ("letter", "invoice", "form", "memo")
PAGE_W, PAGE_H = 210.0, 297.0  # A4 in mm
CHAR_W = 0.5 * 0.3528  # average Helvetica glyph width per pt of font size, in mm

NAMES = [
    "Anna Berger",
    "John Miller",
    "Maria Rossi",
    "Peter Novak",
    "Laura Chen",
    "David Okafor",
    "Sofia Lindqvist",
    "Tom Walsh",
    "Julia Hoffmann",
    "Omar Haddad",
    "Emma Dubois",
    "Lucas Silva",
]
COMPANIES = [
    "ACME Corp",
    "Northwind Traders",
    "Blue Harbor Ltd",
    "Globex GmbH",
    "Initech Inc",
    "Umbrella Supplies",
    "Stark Logistics",
    "Wayne Office Systems",
    "Contoso Services",
]
STREETS = [
    "Main Street",
    "Station Road",
    "Harbour Lane",
    "Park Avenue",
    "Mill Road",
    "High Street",
    "Church Lane",
    "Market Square",
]
CITIES = ["Berlin", "London", "Vienna", "Dublin", "Lisbon", "Oslo", "Prague", "Zurich"]
ITEMS = [
    "Office chair",
    "Desk lamp",
    "Printer paper",
    "Toner cartridge",
    "Consulting hours",
    "Software licence",
    "Laptop stand",
    "Cleaning service",
    "Shipping",
    "Maintenance fee",
]
LETTER_BODY = [
    "I am writing to thank you for your kind support during the last months.",
    "Following our telephone conversation, I would like to confirm our appointment next week.",
    "We were pleased to hear about your new position and wish you every success.",
    "Please accept our apologies for the delay in responding to your enquiry.",
    "I would be grateful if you could send me further information about the programme.",
    "It was a pleasure meeting you at the conference and I hope we can stay in touch.",
    "We are delighted to inform you that your application has been successful.",
    "I look forward to hearing from you at your earliest convenience.",
]
MEMO_BODY = [
    "The team meeting on Thursday is moved to the large conference room.",
    "All staff are reminded to submit their travel expenses by the end of the month.",
    "The new security policy applies to every department from next Monday.",
    "Please review the attached project plan before our next internal meeting.",
    "The office will be closed on Friday for maintenance of the heating system.",
    "Department heads should update their budgets for the next quarter.",
    "Training sessions for the new intranet start next week for all employees.",
    "Parking spaces in the lower garage are reserved for visitors until further notice.",
]
SUBJECTS = ["Team meeting", "Office closure", "Travel expenses", "Security policy", "Budget review"]
FORM_FIELDS = [
    "Full name",
    "Date of birth",
    "Address",
    "Postcode",
    "City",
    "Telephone",
    "Email",
    "Nationality",
    "Occupation",
    "Employer",
    "Emergency contact",
    "Membership number",
]


@dataclass
class Line:
    """One line of text at ``(x, y)`` mm from the top-left corner, in ``size`` pt."""

    x: float
    y: float
    text: str
    size: float = 11.0


@dataclass
class Document:
    label: str
    lines: list[Line] = field(default_factory=list)
    name: str = ""


class _Writer:
    """Lays out lines top to bottom with a document-specific margin, font size and spacing."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.left = rng.uniform(18, 30)
        self.size = rng.choice([10.0, 10.5, 11.0, 12.0])
        self.gap = self.size * 0.3528 * rng.uniform(1.35, 1.7)
        self.y = rng.uniform(18, 30)
        self.lines: list[Line] = []

    def add(
        self, text: str, *, x: float | None = None, size: float | None = None, align: str = "left"
    ) -> None:
        size = size or self.size
        width = len(text) * CHAR_W * size
        if align == "right":
            x = PAGE_W - self.left - width
        elif align == "center":
            x = (PAGE_W - width) / 2
        self.lines.append(Line(self.left if x is None else x, self.y, text, size))
        self.y += self.gap * size / self.size

    def skip(self, n: float = 1.0) -> None:
        self.y += self.gap * n

    def paragraph(self, sentences: list[str], width_chars: int = 80) -> None:
        text, line = " ".join(sentences), ""
        for word in text.split():
            if len(line) + len(word) + 1 > width_chars:
                self.add(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            self.add(line)


def _date(rng: random.Random) -> str:
    d, m, y = rng.randint(1, 28), rng.randint(1, 12), rng.randint(2019, 2025)
    return rng.choice([f"{d:02d}.{m:02d}.{y}", f"{y}-{m:02d}-{d:02d}", f"{d} {_MONTHS[m - 1]} {y}"])


_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]  # fmt: skip


def _address(w: _Writer, rng: random.Random, align: str = "left") -> None:
    w.add(rng.choice(NAMES + COMPANIES), align=align)
    w.add(f"{rng.choice(STREETS)} {rng.randint(1, 120)}", align=align)
    w.add(f"{rng.randint(10000, 99999)} {rng.choice(CITIES)}", align=align)


def _letter(w: _Writer, rng: random.Random) -> None:
    _address(w, rng, align=rng.choice(["left", "right"]))
    w.skip(1.5)
    _address(w, rng)
    w.skip()
    w.add(f"{rng.choice(CITIES)}, {_date(rng)}", align="right")
    w.skip()
    if rng.random() < 0.5:
        w.add(f"Re: {rng.choice(['Your enquiry', 'Our meeting', 'Your application', 'Thank you'])}")
    w.add(f"Dear {rng.choice(['Mr', 'Ms', 'Dr'])} {rng.choice(NAMES).split()[1]},")
    w.skip(0.5)
    w.paragraph(rng.sample(LETTER_BODY, rng.randint(2, 4)))
    w.skip()
    w.add(rng.choice(["Yours sincerely,", "Kind regards,", "Best wishes,", "Yours faithfully,"]))
    w.skip()
    w.add(rng.choice(NAMES))


def _invoice_lines(w: _Writer, rng: random.Random) -> None:
    w.add("Item Quantity Unit price Amount")
    total = 0.0
    for item in rng.sample(ITEMS, rng.randint(2, 5)):
        qty, price = rng.randint(1, 20), rng.randint(5, 400) + 0.5 * rng.randint(0, 1)
        total += qty * price
        w.add(f"{item} {qty} {price:.2f} {qty * price:.2f}")
    w.add(f"Subtotal {total:.2f}", align="right")
    w.add(f"VAT {rng.choice([7, 19, 20])}% {total * 0.19:.2f}", align="right")
    w.add(f"Total amount due {total * 1.19:.2f} EUR", align="right")


def _invoice(w: _Writer, rng: random.Random) -> None:
    w.add(
        rng.choice(["INVOICE", "Invoice", "Tax Invoice"]),
        size=w.size + 6,
        align=rng.choice(["left", "right"]),
    )
    w.skip(0.5)
    _address(w, rng, align="right")
    w.skip()
    w.add(f"Invoice number: {rng.choice(['INV', 'RE', 'No'])}-{rng.randint(1000, 99999)}")
    w.add(f"Invoice date: {_date(rng)}")
    w.add(f"Customer number: {rng.randint(10000, 99999)}")
    w.skip()
    w.add("Bill to:")
    _address(w, rng)
    w.skip()
    _invoice_lines(w, rng)
    w.skip()
    w.add(f"Payment due within {rng.choice([7, 14, 30])} days of the invoice date.")
    w.add(f"Bank: {rng.choice(COMPANIES)} Bank IBAN DE{rng.randint(10**9, 10**10 - 1)}")


def _form(w: _Writer, rng: random.Random) -> None:
    title = rng.choice(
        ["Application Form", "Registration Form", "Membership Application", "Claim Form"]
    )
    w.add(title, size=w.size + 5, align=rng.choice(["left", "center"]))
    w.add(
        rng.choice(
            [
                "Please fill in all fields in block capitals.",
                "Please complete this form and return it to the office.",
            ]
        )
    )
    w.skip()
    for name in rng.sample(FORM_FIELDS, rng.randint(6, 10)):
        w.add(f"{name}: ______________________")
    w.skip()
    question = rng.choice(
        ["Do you agree to the terms", "Are you a new member", "Is the address correct"]
    )
    w.add(f"{question}? [ ] Yes [ ] No")
    w.add("[ ] I confirm that the information given above is correct.")
    w.skip()
    w.add("Signature: __________________ Date: __________")
    w.add(f"For office use only. Form {rng.choice(['A', 'B', 'C'])}{rng.randint(1, 99)}")


def _memo(w: _Writer, rng: random.Random) -> None:
    w.add(
        rng.choice(["MEMORANDUM", "Memo", "INTERNAL MEMO", "Internal Memorandum"]), size=w.size + 5
    )
    w.skip(0.5)
    recipients = ["All staff", "Sales team", "Department heads", rng.choice(NAMES)]
    header = [f"To: {rng.choice(recipients)}", f"From: {rng.choice(NAMES)}", f"Date: {_date(rng)}"]
    header.append(f"Subject: {rng.choice(SUBJECTS)}")
    if rng.random() < 0.5:
        header[1], header[2] = header[2], header[1]
    for line in header:
        w.add(line)
    w.skip()
    w.paragraph(rng.sample(MEMO_BODY, rng.randint(2, 4)))
    w.skip()
    if rng.random() < 0.6:
        w.add(f"cc: {rng.choice(NAMES)}")


BUILDERS: dict[str, Callable[[_Writer, random.Random], None]] = {
    "letter": _letter, "invoice": _invoice, "form": _form, "memo": _memo,
}  # fmt: skip


def generate(label: str, rng: random.Random) -> Document:
    """One document of class ``label``."""
    if label not in BUILDERS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    w = _Writer(rng)
    BUILDERS[label](w, rng)
    return Document(label, w.lines)


def generate_set(n: int, seed: int) -> list[Document]:
    """``n`` documents, classes balanced and shuffled, fully determined by ``seed``."""
    rng = random.Random(seed)
    docs = [generate(LABELS[i % len(LABELS)], rng) for i in range(n)]
    rng.shuffle(docs)
    return docs


def ambiguous(kind: str, rng: random.Random) -> Document:
    """Deliberately mixed documents; ``label`` is the intended class, the content is not pure."""
    w = _Writer(rng)
    if kind == "letter_quoting_invoice":  # a letter whose body reproduces invoice lines
        _address(w, rng)
        w.skip()
        w.add(f"Dear {rng.choice(['Mr', 'Ms'])} {rng.choice(NAMES).split()[1]},")
        w.paragraph(["Please find below the details of the invoice we received last month."])
        w.add(f"Invoice number: INV-{rng.randint(1000, 9999)}")
        _invoice_lines(w, rng)
        w.add("Kind regards,")
        w.add(rng.choice(NAMES))
        return Document("letter", w.lines)
    if kind == "memo_with_form":  # a memo that asks staff to fill in fields
        _memo(w, rng)
        for name in rng.sample(FORM_FIELDS, 5):
            w.add(f"{name}: ______________________")
        w.add("Signature: __________________")
        return Document("memo", w.lines)
    if kind == "invoice_as_letter":  # a payment reminder written as a letter
        _letter(w, rng)
        w.skip()
        _invoice_lines(w, rng)
        w.add(f"Payment due within {rng.choice([7, 14])} days.")
        return Document("invoice", w.lines)
    raise ValueError(f"unknown ambiguous kind {kind!r}")


def mixture(rng: random.Random) -> tuple[Document, dict[str, float]]:
    """The top of one class's document over the bottom of another's, and the share of words each
    class contributed: soft training targets that teach the model to hedge on mixed pages."""
    first, second = rng.sample(LABELS, 2)
    a, b = generate(first, rng), generate(second, rng)
    share = rng.uniform(0.3, 0.7)
    top = a.lines[: max(1, round(share * len(a.lines)))]
    bottom = b.lines[len(b.lines) - max(1, round((1 - share) * len(b.lines))) :]
    w = _Writer(rng)
    for line in top + bottom:
        w.add(line.text, x=line.x, size=line.size)
    n_top = sum(len(line.text.split()) for line in top)
    n_bottom = sum(len(line.text.split()) for line in bottom)
    total = n_top + n_bottom
    return Document(first, w.lines), {first: n_top / total, second: n_bottom / total}


AMBIGUOUS_KINDS = ("letter_quoting_invoice", "memo_with_form", "invoice_as_letter")
_WORD = re.compile(r"\S+")


def words_and_boxes(doc: Document) -> tuple[list[str], list[list[int]]]:
    """Whitespace-separated words with ``[x0, y0, x1, y1]`` boxes on a 0..1000 page scale, as
    deepdoctection produces them from a PDF's text layer."""
    words, boxes = [], []
    for line in doc.lines:
        h = line.size * 0.3528
        for match in _WORD.finditer(line.text):
            x0 = line.x + match.start() * CHAR_W * line.size
            x1 = x0 + len(match.group()) * CHAR_W * line.size
            box = [
                x0 / PAGE_W,
                (line.y - 0.8 * h) / PAGE_H,
                x1 / PAGE_W,
                (line.y + 0.2 * h) / PAGE_H,
            ]
            words.append(match.group())
            boxes.append([min(1000, max(0, round(v * 1000))) for v in box])
    return words, boxes


def vocabulary() -> list[str]:
    """Every lower-case word the templates can produce (plus punctuation-free pieces), for the
    demo tokenizer's WordPiece vocabulary; digits and rare strings fall back to word pieces."""
    docs = generate_set(4000, seed=12345)
    rng = random.Random(12345)
    docs += [ambiguous(kind, rng) for kind in AMBIGUOUS_KINDS for _ in range(50)]
    return sorted(
        {w for d in docs for line in d.lines for w in re.findall(r"[a-z]+", line.text.lower())}
    )
