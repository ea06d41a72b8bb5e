"""Train the demo LayoutLM document classifier shipped in probhook/demo/model (deterministic).

    python scripts/train_demo_model.py            # about two minutes on a 2-core CPU

Synthetic documents from probhook.demo.synth (letter, invoice, form, memo), a small random
LayoutLM (hidden 64, 2 layers), AdamW, fixed seeds and deterministic kernels. Prints the
held-out accuracy on documents from a different seed.
"""

import argparse
import random
import shutil
import time
from pathlib import Path

import torch
from transformers import LayoutLMConfig, LayoutLMForSequenceClassification

from probhook.demo import MAX_LENGTH, MODEL_DIR, encode, load_tokenizer
from probhook.demo.synth import LABELS, generate_set, mixture, vocabulary

SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}


def write_vocab(path: Path) -> None:
    tokens = [SPECIAL.get(i, f"[unused{i}]") for i in range(104)]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punct = list(".,:;-_[]()%/?@&")
    tokens += vocabulary() + chars + punct + [f"##{c}" for c in chars]
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--train", type=int, default=2400)
    parser.add_argument("--mixtures", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    random.seed(0)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_vocab(tmp / "vocab.txt")
    tokenizer = load_tokenizer(tmp)
    config = LayoutLMConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=64, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=128, max_position_embeddings=MAX_LENGTH,
        max_2d_position_embeddings=1024, num_labels=len(LABELS), pad_token_id=0,
        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)},
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    model = LayoutLMForSequenceClassification(config)
    train = generate_set(args.train, seed=1)
    targets = torch.nn.functional.one_hot(
        torch.tensor([LABELS.index(d.label) for d in train]), len(LABELS)
    ).float()
    rng = random.Random(3)
    mixed = [mixture(rng) for _ in range(args.mixtures)]
    soft = torch.tensor([[shares.get(label, 0.0) for label in LABELS] for _, shares in mixed])
    train += [doc for doc, _ in mixed]
    targets = torch.cat([targets, soft])
    held_out = generate_set(400, seed=2)
    inputs = encode(train, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train))
        for i in range(0, len(train), 32):
            idx = order[i : i + 32]
            out = model(**{k: v[idx] for k, v in inputs.items()})
            loss = torch.nn.functional.cross_entropy(out.logits, targets[idx])  # soft targets
            opt.zero_grad()
            loss.backward()
            opt.step()
        accuracy = evaluate(model, tokenizer, held_out)
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out accuracy {accuracy:.3f}, "
              f"{time.time() - start:.0f} s")  # fmt: skip
    model.eval()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"saved to {args.out} ({size / 1e6:.2f} MB)")


@torch.no_grad()
def evaluate(model, tokenizer, docs) -> float:
    model.eval()
    logits = model(**encode(docs, tokenizer)).logits
    return (
        (logits.argmax(1) == torch.tensor([LABELS.index(d.label) for d in docs]))
        .float()
        .mean()
        .item()
    )


if __name__ == "__main__":
    main()
