"""Capture every page's full distribution from a deepdoctection LayoutLM run (offline).

Builds a tiny random LayoutLM document classifier and synthetic pages, so it runs anywhere;
with your own analyzer, only the ``with capture_probs(...)`` block matters.
"""

import tempfile

from probhook.testing import build_model, make_pages, make_pipe, offline_environment, run_pipe

offline_environment()

from probhook import capture_probs  # noqa: E402

model = build_model("layoutlm", tempfile.mkdtemp())
pipe = make_pipe(
    model
)  # DoctectionPipe + LMSequenceClassifierService + HFLayoutLmSequenceClassifier
pages = make_pages(6, n_documents=2)

with capture_probs(pipe) as cap:
    results = run_pipe(pipe, pages)  # the usual list(pipe.analyze(...))

print(f"{'document':<8} {'page':>4}  {'deepdoctection':<16} top-3 from probhook")
for page in results:
    dist = cap.get(page)
    top3 = "  ".join(f"{label} {p:.3f}" for label, p in dist.top_k(3))
    print(f"{page.document_id:<8} {page.page_number:>4}  {page.document_type.value:<16} {top3}")
for doc_id, doc in cap.by_document().items():
    print(f"{doc_id}: mean over {len(doc.pages)} pages -> {doc.predicted} ({doc.confidence:.3f})")
