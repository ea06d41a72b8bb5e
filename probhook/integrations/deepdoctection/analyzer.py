"""Building a deepdoctection analyzer around a local classifier folder: shared by the command line
and the test kit, so both run the same set-up.

A Hugging Face folder (``config.json``, weights, tokenizer) is registered as a local
``ModelProfile`` and switched on in ``dd.get_dd_analyzer`` with every other component off: a
``*ForSequenceClassification`` as the page classifier, a ``*ForTokenClassification`` as the
word classifier (with sliding windows, so that long pages are not truncated).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

WRAPPERS = {
    "layoutlm": "HFLayoutLmSequenceClassifier",
    "layoutlmv2": "HFLayoutLmv2SequenceClassifier",
    "layoutlmv3": "HFLayoutLmv3SequenceClassifier",
    "lilt": "HFLiltSequenceClassifier",
}
TEXT_WRAPPER = "HFLmSequenceClassifier"  # bert, roberta, xlm-roberta, ...
TOKEN_WRAPPERS = {kind: name.replace("Sequence", "Token") for kind, name in WRAPPERS.items()}
TEXT_TOKEN_WRAPPER = "HFLmTokenClassifier"


class UsageError(Exception):
    """A problem with what the user asked for (a path, a model folder): nothing is processed."""


def wrapper_name(model_type: str) -> str:
    """The deepdoctection sequence-classifier wrapper for a Hugging Face ``model_type``."""
    return WRAPPERS.get(model_type, TEXT_WRAPPER)


def token_wrapper_name(model_type: str) -> str:
    """The deepdoctection token-classifier wrapper for a Hugging Face ``model_type``."""
    return TOKEN_WRAPPERS.get(model_type, TEXT_TOKEN_WRAPPER)


@dataclass(frozen=True)
class ModelFolder:
    """What a Hugging Face classifier folder holds: a page (``"sequence"``) or word
    (``"token"``) classifier, its deepdoctection wrapper, labels and window length."""

    path: Path
    task: Literal["sequence", "token"]
    wrapper: str
    labels: list[str]
    max_length: int


def read_model_folder(model_dir: Path) -> ModelFolder:
    """The classifier in a Hugging Face folder: ``*ForSequenceClassification`` (pages) or
    ``*ForTokenClassification`` (words); anything else is a :class:`UsageError`."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{model_dir} has no config.json: expected a Hugging Face model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    suffixes = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}
    tasks = [t for t, end in suffixes.items() if any(a.endswith(end) for a in architectures)]
    if not tasks:
        raise UsageError(
            f"{model_dir} holds {architectures or 'no architecture'}, not a sequence classifier "
            "(*ForSequenceClassification: pages) or a token classifier "
            "(*ForTokenClassification: words)"
        )
    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not labels:
        raise UsageError(f"{config_path} has no id2label: the classifier's categories are unknown")
    task: Literal["sequence", "token"] = "token" if tasks[0] == "token" else "sequence"
    model_type = config.get("model_type", "")
    wrapper = wrapper_name(model_type) if task == "sequence" else token_wrapper_name(model_type)
    return ModelFolder(model_dir, task, wrapper, labels, _max_length(model_dir, config))


def _max_length(model_dir: Path, config: dict[str, Any]) -> int:
    """Tokens per window: the tokenizer's ``model_max_length`` if finite, else 512."""
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file():
        value = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(value, int) and 0 < value <= 100_000:
            return value
    return min(512, int(config.get("max_position_embeddings") or 512))


def read_model_dir(model_dir: Path) -> tuple[str, list[str]]:
    """The deepdoctection wrapper name and the labels of a Hugging Face sequence classifier."""
    folder = read_model_folder(model_dir)
    if folder.task != "sequence":
        raise UsageError(
            f"{model_dir} holds a token classifier (*ForTokenClassification): it labels words, "
            "not pages; read it with read_model_folder and build_word_analyzer"
        )
    return folder.wrapper, folder.labels


def register_profile(name: str, config: str, labels: Sequence[str], wrapper: str) -> str:
    """Register a local ``ModelProfile`` called ``name`` (once) and return the name.

    ``config`` is the config path as deepdoctection resolves it: absolute, or relative to its
    configs folder. Labels must be deepdoctection categories: document types (letter, invoice,
    form, ...) for a page classifier, token tags (B-answer, I-question, O, ...) for a word one.
    """
    import deepdoctection as dd

    categories = {}
    for i, label in enumerate(labels):
        try:
            categories[i + 1] = dd.get_type(label)
        except KeyError:
            raise UsageError(
                f"label {label!r} of {name} is not a deepdoctection category (document types "
                "such as letter, invoice, form, memo; token tags such as B-answer, I-question, O)"
            ) from None
    if not dd.ModelCatalog.is_registered(name):
        profile = dd.ModelProfile(name=name, description="probhook local classifier", size=[],
                                  config=config, categories=categories, dl_library="PT",
                                  model_wrapper=wrapper)  # fmt: skip
        dd.ModelCatalog.register(name, profile)
    return name


def analyzer_overrides(
    profile: str, *, pdf_text: bool = False, ocr: bool = False, words_stride: int | None = None
) -> list[str]:
    """``config_overwrite`` for ``get_dd_analyzer``: the sequence classifier ``profile`` (the
    token classifier, windows ``words_stride`` tokens apart, when that is given), PDF text
    extraction and OCR as asked, no layout or table models."""
    common = [
        "USE_LAYOUT=False",
        "USE_LAYOUT_NMS=False",
        "USE_TABLE_SEGMENTATION=False",
        f"USE_PDF_MINER={pdf_text}",
        f"USE_OCR={ocr}",
    ]
    # the other classifier is switched off explicitly: deepdoctection keeps overrides between
    # get_dd_analyzer calls in one process
    if words_stride is not None:
        return [*common, "USE_LM_SEQUENCE_CLASS=False", "USE_LM_TOKEN_CLASS=True",
                f"LM_TOKEN_CLASS.WEIGHTS={profile}",
                f"LM_TOKEN_CLASS.SLIDING_WINDOW_STRIDE={words_stride}"]  # fmt: skip
    return [*common, "USE_LM_TOKEN_CLASS=False", "USE_LM_SEQUENCE_CLASS=True",
            f"LM_SEQUENCE_CLASS.WEIGHTS={profile}"]  # fmt: skip


def build_analyzer(model_dir: Path, wrapper: str, labels: list[str], ocr: bool) -> Any:
    """``dd.get_dd_analyzer`` with PDF text extraction and the classifier in ``model_dir``."""
    import deepdoctection as dd
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # an absolute profile name makes deepdoctection read weights and configs in place
    name = os.fspath(model_dir.resolve())
    register_profile(name, os.path.join(name, "config.json"), labels, wrapper)
    return dd.get_dd_analyzer(config_overwrite=analyzer_overrides(name, pdf_text=True, ocr=ocr))


def build_word_analyzer(folder: ModelFolder, ocr: bool) -> Any:
    """``dd.get_dd_analyzer`` with PDF text extraction and the token classifier in ``folder``,
    its windows half a window apart (a long page is read whole, not truncated)."""
    import deepdoctection as dd
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    name = os.fspath(folder.path.resolve())
    register_profile(name, os.path.join(name, "config.json"), folder.labels, folder.wrapper)
    overrides = analyzer_overrides(
        name, pdf_text=True, ocr=ocr, words_stride=max(1, folder.max_length // 2)
    )
    return dd.get_dd_analyzer(config_overwrite=overrides)


def ocr_available() -> bool:
    """Whether an OCR engine (tesseract) is on the PATH, for image input."""
    return shutil.which("tesseract") is not None
