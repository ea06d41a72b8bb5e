"""Building a deepdoctection analyzer around a local classifier folder: shared by the command line
and the test kit, so both run the same set-up.

A Hugging Face folder (``config.json``, weights, tokenizer) is registered as a local
``ModelProfile`` and switched on in ``dd.get_dd_analyzer`` with every other component off.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def read_model_dir(model_dir: Path) -> tuple[str, list[str]]:
    """The deepdoctection wrapper name and the labels of a Hugging Face classifier folder."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{model_dir} has no config.json: expected a Hugging Face model folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UsageError(
            f"{model_dir} holds {architectures or 'no architecture'}, not a sequence "
            "classifier (*ForSequenceClassification): probhook classifies whole pages"
        )
    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not labels:
        raise UsageError(f"{config_path} has no id2label: the classifier's categories are unknown")
    return wrapper_name(config.get("model_type", "")), labels


def register_profile(name: str, config: str, labels: Sequence[str], wrapper: str) -> str:
    """Register a local ``ModelProfile`` called ``name`` (once) and return the name.

    ``config`` is the config path as deepdoctection resolves it: absolute, or relative to its
    configs folder. Labels must be deepdoctection document types (letter, invoice, form, ...).
    """
    import deepdoctection as dd

    categories = {}
    for i, label in enumerate(labels):
        try:
            categories[i + 1] = dd.get_type(label)
        except KeyError:
            raise UsageError(
                f"label {label!r} of {name} is not a deepdoctection document type "
                "(e.g. letter, invoice, form, memo, email, resume, ...)"
            ) from None
    if not dd.ModelCatalog.is_registered(name):
        profile = dd.ModelProfile(name=name, description="probhook local classifier", size=[],
                                  config=config, categories=categories, dl_library="PT",
                                  model_wrapper=wrapper)  # fmt: skip
        dd.ModelCatalog.register(name, profile)
    return name


def analyzer_overrides(profile: str, *, pdf_text: bool = False, ocr: bool = False) -> list[str]:
    """``config_overwrite`` for ``get_dd_analyzer``: the sequence classifier ``profile``, PDF
    text extraction and OCR as asked, no layout or table models."""
    return [
        "USE_LAYOUT=False",
        "USE_LAYOUT_NMS=False",
        "USE_TABLE_SEGMENTATION=False",
        f"USE_PDF_MINER={pdf_text}",
        f"USE_OCR={ocr}",
        "USE_LM_SEQUENCE_CLASS=True",
        f"LM_SEQUENCE_CLASS.WEIGHTS={profile}",
    ]


def build_analyzer(model_dir: Path, wrapper: str, labels: list[str], ocr: bool) -> Any:
    """``dd.get_dd_analyzer`` with PDF text extraction and the classifier in ``model_dir``."""
    import deepdoctection as dd
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # an absolute profile name makes deepdoctection read weights and configs in place
    name = os.fspath(model_dir.resolve())
    register_profile(name, os.path.join(name, "config.json"), labels, wrapper)
    return dd.get_dd_analyzer(config_overwrite=analyzer_overrides(name, pdf_text=True, ocr=ocr))


def ocr_available() -> bool:
    """Whether an OCR engine (tesseract) is on the PATH, for image input."""
    return shutil.which("tesseract") is not None
