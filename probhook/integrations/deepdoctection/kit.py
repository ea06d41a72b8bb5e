"""Offline builders for tests: tiny seeded models, synthetic deepdoctection pages, ready pipelines.

Importable as ``probhook.testing``.

Everything here runs without network access. Models are randomly initialised (seeded), saved with
``save_pretrained`` and loaded back through deepdoctection's own wrappers, so a test exercises the
same code path as a production run. Import this module in your own test suite:

    from probhook.testing import build_model, make_pages, make_pipe, run_pipe

    tiny = build_model("layoutlm", tmp_path)
    pages = run_pipe(make_pipe(tiny), make_pages(4))

All words are drawn from one small vocabulary (see
[`vocab`][probhook.integrations.deepdoctection.vocab]): WordPiece in BERT's layout, which every
supported architecture accepts and dd-core's sliding-window code path requires, or byte-level
BPE (``tokenizer="bpe"``) for RoBERTa-style special tokens.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from probhook._extras import require_extra
from probhook.integrations.deepdoctection.adapter import page_offset
from probhook.integrations.deepdoctection.analyzer import (
    analyzer_overrides,
    register_profile,
    wrapper_name,
)
from probhook.integrations.deepdoctection.vocab import (
    BPE_SPECIAL,
    WORDS,
    TokenizerKind,
    bpe_tokenizer,
    write_vocab,
)

if TYPE_CHECKING:
    import torch

require_extra("deepdoctection", "probhook.testing")  # fail at import, not inside a test

__all__ = [
    "BPE_SPECIAL",
    "DOC_LABELS",
    "MODEL_KINDS",
    "WORDS",
    "CollectingSink",
    "ModelKind",
    "TinyModel",
    "analyzer_overrides",
    "build_model",
    "make_page",
    "make_pages",
    "make_pipe",
    "make_service",
    "offline_environment",
    "register_analyzer_model",
    "run_pipe",
    "wrapper_for",
    "write_vocab",
]

ModelKind = Literal["layoutlm", "layoutlmv3", "lilt", "bert"]
MODEL_KINDS: tuple[ModelKind, ...] = ("layoutlm", "layoutlmv3", "lilt", "bert")
DOC_LABELS: tuple[str, ...] = ("letter", "form", "invoice", "memo")


def offline_environment(cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Make transformers and deepdoctection work offline and keep their caches out of ``$HOME``.

    Call before ``import deepdoctection``: it copies config files into its cache folder on import.
    Variables that are already set are left alone.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "DEEPDOCTECTION_CACHE" not in os.environ:
        root = cache_dir or tempfile.mkdtemp(prefix="probhook-dd-cache-")
        os.environ["DEEPDOCTECTION_CACHE"] = os.fspath(root)


@dataclass(frozen=True)
class TinyModel:
    """A saved tiny classifier: ``path`` holds ``config.json``, weights and tokenizer files."""

    kind: ModelKind
    path: Path
    labels: tuple[str, ...]
    max_length: int
    task: Literal["sequence", "token"] = "sequence"
    tokenizer: TokenizerKind = "wordpiece"

    @property
    def config_path(self) -> Path:
        """The model's ``config.json``."""
        return self.path / "config.json"

    def load_tokenizer(self) -> Any:
        """The model's tokenizer: WordPiece (``BertTokenizerFast``: ``[CLS]``, ``[SEP]``,
        ``[PAD]``) or byte-level BPE (RoBERTa's: ``<s>``, ``</s>``, ``<pad>``)."""
        if self.tokenizer == "bpe":
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.path, add_prefix_space=True)
        from transformers import BertTokenizerFast

        # transformers 5 ignores ``vocab_file=`` in this constructor and honours ``vocab=``;
        # transformers 4 needs ``vocab_file=``
        vocab = os.fspath(self.path / "vocab.txt")
        return BertTokenizerFast(vocab_file=vocab, vocab=vocab, model_max_length=self.max_length)

    def load_model(self) -> torch.nn.Module:
        """The saved ``*ForSequenceClassification`` (``*ForTokenClassification``) model."""
        model: torch.nn.Module = _auto_class(self.task).from_pretrained(self.path)
        return model.eval()


def _auto_class(task: str) -> Any:
    import transformers

    return getattr(transformers, f"AutoModelFor{task.capitalize()}Classification")


def _config(
    kind: ModelKind, n_labels: int, vocab_size: int, max_length: int, pad_token_id: int = 0
) -> Any:
    import transformers as tf

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        # RoBERTa-style models count positions from pad_token_id + 1
        "max_position_embeddings": max_length + 2 + pad_token_id,
        "num_labels": n_labels,
        "pad_token_id": pad_token_id,
    }
    if kind == "layoutlm":
        return tf.LayoutLMConfig(hidden_size=32, intermediate_size=64, **common)
    if kind == "layoutlmv3":
        # 4 * coordinate_size + 2 * shape_size must equal hidden_size
        return tf.LayoutLMv3Config(
            hidden_size=32, intermediate_size=64, coordinate_size=6, shape_size=4,
            input_size=224, patch_size=16, **common,
        )  # fmt: skip
    if kind == "lilt":
        # hidden % 6 == 0 and (hidden // channel_shrink_ratio) % heads == 0
        return tf.LiltConfig(hidden_size=48, intermediate_size=96, channel_shrink_ratio=4, **common)
    if kind == "bert":
        return tf.BertConfig(hidden_size=32, intermediate_size=64, **common)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def build_model(
    kind: ModelKind,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] = DOC_LABELS,
    seed: int = 0,
    max_length: int = 128,
    multi_label: bool = False,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    task: Literal["sequence", "token"] = "sequence",
    head_scale: float = 50.0,
    tokenizer: TokenizerKind = "wordpiece",
) -> TinyModel:
    """Build a seeded, randomly initialised ``*ForSequenceClassification`` and save it to ``path``.

    ``labels`` become ``config.id2label``; for deepdoctection they must be registered object types
    (``DocumentLabel`` values such as ``"letter"`` or ``"invoice"``). ``hidden_size`` and
    ``num_layers`` override the tiny defaults (benchmarks build base-size models this way).
    ``task="token"`` builds a ``*ForTokenClassification`` (see
    [`token_kit`][probhook.integrations.deepdoctection.token_kit]); ``tokenizer="bpe"`` gives it
    a RoBERTa-style byte-level BPE tokenizer (``<s>``, ``</s>``, ``<pad>``) instead of WordPiece.
    """
    import torch

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer == "bpe":
        bpe = bpe_tokenizer(max_length)
        bpe.save_pretrained(out)
        vocab_size, pad = len(bpe), int(bpe.pad_token_id)
    else:
        vocab = write_vocab(out / "vocab.txt")
        vocab_size, pad = len(vocab.read_text(encoding="utf-8").splitlines()), 0
    config = _config(kind, len(labels), vocab_size, max_length, pad)
    if hidden_size is not None:
        config.hidden_size, config.intermediate_size = hidden_size, 4 * hidden_size
        config.num_attention_heads = 12 if hidden_size % 12 == 0 else 2
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    if multi_label:
        config.problem_type = "multi_label_classification"
    torch.manual_seed(seed)
    model = _auto_class(task).from_config(config)
    # Random init gives near-uniform outputs; a wider head makes distributions tell pages apart.
    with torch.no_grad():
        last = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(head_scale)
    model.save_pretrained(out)
    tiny = TinyModel(kind, out, tuple(labels), max_length, task, tokenizer)
    if tokenizer == "wordpiece":
        tiny.load_tokenizer().save_pretrained(out)
    return tiny


def make_page(
    words: Sequence[str],
    *,
    file_name: str = "page.pdf",
    document_id: str | None = None,
    page_number: int = 1,
    with_pixels: bool = False,
    seed: int = 0,
) -> Any:
    """A deepdoctection ``Image`` (1000x1000) with one WORD annotation per word, laid out in lines.

    ``with_pixels`` attaches a 1000x1000x3 uint8 page image: LayoutLMv3 needs pixels; the
    others do not, and dd-core turns pixels into tensors slowly (~0.3 s a page) even for them.
    """
    import deepdoctection as dd
    import numpy as np

    layout, word_key, rel = _enums(dd)
    image = dd.Image(file_name=file_name, location=f"/synthetic/{file_name}")
    if document_id is not None:  # set afterwards: deepdoctection 0.46 takes them in no __init__
        image.document_id = document_id
        # ``page_number`` is 1-based; stored as the installed deepdoctection numbers pages
        image.page_number = page_number - page_offset(dd.__version__)
    if with_pixels:
        rng = np.random.default_rng(seed)
        image.image = rng.integers(0, 256, size=(1000, 1000, 3), dtype=np.uint8)
    else:
        image.set_width_height(1000, 1000)
    # Text-only models read a page through ordered text blocks and their ordered child words.
    block = dd.ImageAnnotation(
        category_name=layout.TEXT,
        bounding_box=dd.BoundingBox(ulx=10, uly=10, width=980, height=980, absolute_coords=True),
    )
    if words:
        image.dump(block)
        _set_reading_order(dd, block, 1)
    for i, word in enumerate(words):
        x, y = 20 + (i % 8) * 120, 20 + (i // 8) * 30
        ann = dd.ImageAnnotation(
            category_name=layout.WORD,
            bounding_box=dd.BoundingBox(ulx=x, uly=y, width=100, height=20, absolute_coords=True),
        )
        image.dump(ann)
        ann.dump_sub_category(
            word_key.CHARACTERS,
            dd.ContainerAnnotation(category_name=word_key.CHARACTERS, value=word),
        )
        _set_reading_order(dd, ann, i + 1)
        block.dump_relationship(rel.CHILD, ann.annotation_id)
    return image


def _enums(dd: Any) -> tuple[Any, Any, Any]:
    """The layout, word and relationship keys: deepdoctection 1.2 renamed them
    (``LayoutType`` -> ``LayoutLabel``, ``WordType`` -> ``WordKey``, ``Relationships`` ->
    ``RelationshipKey``)."""
    if hasattr(dd, "LayoutLabel"):
        return dd.LayoutLabel, dd.WordKey, dd.RelationshipKey
    return dd.LayoutType, dd.WordType, dd.Relationships


def _set_reading_order(dd: Any, ann: Any, position: int) -> None:
    key = _enums(dd)[2].READING_ORDER
    ann.dump_sub_category(key, dd.CategoryAnnotation(category_name=key, category_id=position))


def make_pages(
    n_pages: int,
    *,
    n_documents: int = 1,
    words_per_page: int = 24,
    empty_pages: Sequence[int] = (),
    with_pixels: bool = False,
    seed: int = 0,
) -> list[Any]:
    """``n_pages`` pages spread over ``n_documents`` multi-page documents (shared ``document_id``,
    increasing ``page_number``), with random words; pages listed in ``empty_pages`` have none.
    """
    rng = random.Random(seed)
    pages = []
    for i in range(n_pages):
        doc, page_number = i % n_documents, i // n_documents + 1
        words = [] if i in empty_pages else rng.choices(WORDS, k=words_per_page)
        pages.append(
            make_page(
                words,
                file_name=f"doc{doc}_p{page_number}.pdf",
                document_id=f"doc-{doc}",
                page_number=page_number,
                with_pixels=with_pixels,
                seed=seed + i,
            )
        )
    return pages


def wrapper_for(tiny: TinyModel, device: str = "cpu") -> Any:
    """The deepdoctection LM wrapper for ``tiny``, with categories ``{1: labels[0], ...}``."""
    import deepdoctection as dd

    wrapper = getattr(dd, wrapper_name(tiny.kind))
    categories = {i + 1: label for i, label in enumerate(tiny.labels)}
    return wrapper(tiny.config_path, tiny.path, categories=categories, device=device)


def make_service(tiny: TinyModel, wrapper: Any = None) -> Any:
    """An ``LMSequenceClassifierService`` around the real wrapper for ``tiny``."""
    import deepdoctection as dd

    tokenizer, wrapper = tiny.load_tokenizer(), wrapper or wrapper_for(tiny)
    # every tiny model reads the kit's BERT vocabulary; deepdoctection 0.46 insists on the
    # tokenizer class it guesses from the architecture (RoBERTa for LiLT and LayoutLMv3)
    wrapper.model.config.tokenizer_class = type(tokenizer).__name__
    return dd.LMSequenceClassifierService(tokenizer, wrapper)


def make_pipe(*models: TinyModel) -> Any:
    """A ``DoctectionPipe`` with one sequence-classification service per model."""
    import deepdoctection as dd

    return dd.DoctectionPipe(pipeline_component_list=[make_service(m) for m in models])


def run_pipe(pipe: Any, pages: Sequence[Any]) -> list[Any]:
    """Run ``pipe`` over ``pages`` in order; return the deepdoctection ``Page`` objects."""
    import deepdoctection as dd

    flow = pipe.analyze(dataset_dataflow=dd.DataFromList(list(pages), shuffle=False))
    flow.reset_state()
    return list(flow)


class CollectingSink:
    """A [`probhook.sink.Sink`][probhook.sink.Sink] that keeps every block it receives in memory
    (for tests). While ``failing`` is set it refuses every write (and, with ``close_fails``, the
    close) with the ``OSError`` of a full disk."""

    def __init__(self, *, failing: bool = False, close_fails: bool = False) -> None:
        self.blocks: list[Any] = []
        self.closed = False
        self.failing, self.close_fails = failing, close_fails

    def write(self, rows: Any) -> None:
        """Keep ``rows``."""
        if self.failing:
            raise OSError(28, "No space left on device")
        self.blocks.append(rows)

    def close(self) -> None:
        """Mark the sink closed."""
        if self.failing and self.close_fails:
            raise OSError(28, "No space left on device")
        self.closed = True

    @property
    def seq(self) -> list[int]:
        """The sequence numbers of every row received, in order."""
        return [int(s) for block in self.blocks for s in block.seq]


def register_analyzer_model(tiny: TinyModel, name: str | None = None) -> str:
    """Place ``tiny`` where ``dd.get_dd_analyzer`` looks for weights and configs, register a
    local ``ModelProfile`` for it, and return the profile name for ``LM_SEQUENCE_CLASS.WEIGHTS``.
    """
    import shutil

    import deepdoctection as dd

    if hasattr(dd, "get_weights_dir_path"):  # deepdoctection 0.46
        roots = (dd.get_weights_dir_path(), dd.get_configs_dir_path())
    else:
        from dd_core.utils.env_info import SETTINGS

        roots = (SETTINGS.MODEL_DIR, SETTINGS.CONFIGS_DIR)
    name = name or f"probhook/tiny-{tiny.kind}"
    # weights folder and configs folder (config.json next to the tokenizer files) by profile name
    for root in map(Path, roots):
        shutil.copytree(tiny.path, root / name, dirs_exist_ok=True)
    return register_profile(name, f"{name}/config.json", tiny.labels, wrapper_name(tiny.kind))
