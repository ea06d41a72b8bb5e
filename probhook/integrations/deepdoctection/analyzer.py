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
import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from probhook._extras import require_extra
from probhook.integrations.deepdoctection.pixels import skip_unused_pixels

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


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                   "spiece.model")  # fmt: skip
# the layer whose rows are the classes: ``classifier`` (BERT, LayoutLM) or ``classifier.out_proj``
# (RoBERTa-style heads: XLM-R, LayoutLMv3, LiLT)
_HEAD_WEIGHT = re.compile(r"(^|\.)(classifier(\.out_proj)?|score)\.weight$")


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
    ``*ForTokenClassification`` (words), checked without loading the model: it has weights,
    a tokenizer and as many label names as the classifier has outputs; each problem is one
    [`UsageError`][UsageError]."""
    if model_dir.is_file():
        parent = f" (its folder: {model_dir.parent})" if model_dir.name == "config.json" else ""
        raise UsageError(
            f"--model {model_dir} is a file: give the Hugging Face model folder that holds "
            f"config.json, the weights and the tokenizer{parent}"
        )
    if not model_dir.is_dir():
        raise UsageError(
            f"--model {model_dir}: no such folder (expected a Hugging Face model folder)"
        )
    config = read_config(model_dir, f"{model_dir} has no config.json: expected a Hugging Face "
                         "model folder")  # fmt: skip
    architectures = config.get("architectures") or []
    suffixes = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}
    tasks = [t for t, end in suffixes.items() if any(str(a).endswith(end) for a in architectures)]
    if not tasks:
        raise UsageError(
            f"{model_dir} holds {architectures or 'no architecture'}, not a sequence classifier "
            "(*ForSequenceClassification: pages) or a token classifier "
            "(*ForTokenClassification: words)"
        )
    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not labels:
        raise UsageError(
            f"{model_dir / 'config.json'} has no id2label: the classifier's categories are unknown"
        )
    weights = next((model_dir / n for n in WEIGHT_FILES if (model_dir / n).is_file()), None)
    if weights is None:
        raise UsageError(f"{model_dir} has no weights (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((model_dir / n).is_file() for n in TOKENIZER_FILES):
        raise UsageError(
            f"{model_dir} has no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})"
        )
    outputs = classifier_outputs(weights)
    if outputs is not None and outputs != len(labels):
        raise UsageError(
            f"{model_dir}: config.json names {len(labels)} labels but the classifier weights "
            f"have {outputs} outputs"
        )
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


def classifier_outputs(weights: Path) -> int | None:
    """The number of classes of the classifier layer in a weights file (None if not found),
    read from the safetensors header (or the state dict of a ``.bin``) without building the
    model."""
    try:
        if weights.name.endswith(".index.json"):
            weight_map = json.loads(weights.read_text(encoding="utf-8"))["weight_map"]
            names = [n for n in weight_map if _HEAD_WEIGHT.search(n)]
            return classifier_outputs(weights.parent / weight_map[max(names)]) if names else None
        if weights.suffix == ".safetensors":
            with weights.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                shapes = {n: v["shape"] for n, v in json.loads(f.read(size)).items()
                          if n != "__metadata__"}  # fmt: skip
        else:
            import torch

            state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
            shapes = {n: list(t.shape) for n, t in state.items()}
    except Exception as error:
        raise UsageError(f"{weights} cannot be read as model weights ({error})") from None
    names = sorted(n for n in shapes if _HEAD_WEIGHT.search(n))
    return int(shapes[names[-1]][0]) if names else None


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
    weights = repr(profile) if _evals_weights() else profile
    return [*common, "USE_LM_TOKEN_CLASS=False", "USE_LM_SEQUENCE_CLASS=True",
            f"LM_SEQUENCE_CLASS.WEIGHTS={weights}"]  # fmt: skip


def _evals_weights() -> bool:
    """Whether ``get_dd_analyzer`` will ``eval`` the weights override: deepdoctection 0.46 does
    while its global config holds no string there (None until a first analyzer set one); 1.x
    keeps a value that is no Python literal as the plain string."""
    import deepdoctection as dd

    if not dd.__version__.startswith("0."):
        return False
    from deepdoctection.analyzer.config import cfg

    return not isinstance(cfg.LM_SEQUENCE_CLASS.WEIGHTS, str)


def build_analyzer(
    model_dir: Path, wrapper: str, labels: list[str], ocr: bool, *, skip_pixels: bool = True
) -> Any:
    """``dd.get_dd_analyzer`` with PDF text extraction and the classifier in ``model_dir``;
    with ``skip_pixels``, no page pixels are built for a model that does not read them
    ([`skip_unused_pixels`][probhook.integrations.deepdoctection.pixels.skip_unused_pixels])."""
    require_extra("deepdoctection", "a deepdoctection analyzer (probhook run, probhook demo)")
    import deepdoctection as dd
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # an absolute profile name makes deepdoctection read weights and configs in place
    name = os.fspath(model_dir.resolve())
    register_profile(name, os.path.join(name, "config.json"), labels, wrapper)
    overrides = analyzer_overrides(name, pdf_text=True, ocr=ocr)
    try:
        analyzer = dd.get_dd_analyzer(config_overwrite=overrides)
    except Exception as error:  # transformers' own message, without its traceback
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise UsageError(
            f"the classifier in {model_dir} cannot be loaded ({type(error).__name__}: {first})"
        ) from None
    read_every_word(analyzer)
    return skip_unused_pixels(analyzer) if skip_pixels else analyzer


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
    return read_every_word(dd.get_dd_analyzer(config_overwrite=overrides))


def analyzer_from_folder(
    model_dir: str | os.PathLike[str], *, ocr: bool | None = None, skip_pixels: bool = True
) -> Any:
    """The deepdoctection analyzer ``probhook run --model model_dir`` uses: PDF text extraction
    (and OCR, by default when tesseract is on the PATH) and the classifier in the local Hugging
    Face folder ``model_dir``, read in place (no download): a ``*ForSequenceClassification``
    classifies pages, a ``*ForTokenClassification`` tags words. Problems with the folder are one
    [`UsageError`][UsageError] each.

        analyzer = analyzer_from_folder("my-layoutlm")
        flow = analyzer.analyze(path="scan.pdf")  # one PDF, or a folder of images
        flow.reset_state()
        pages = list(flow)
    """
    folder = read_model_folder(Path(model_dir))
    ocr = ocr_available() if ocr is None else ocr
    if folder.task == "token":
        return build_word_analyzer(folder, ocr)
    return build_analyzer(folder.path, folder.wrapper, folder.labels, ocr, skip_pixels=skip_pixels)


def read_every_word(analyzer: Any) -> Any:
    """Let text-only classifiers (BERT, XLM-R: ``HFLmSequenceClassifier``,
    ``HFLmTokenClassifier``) read every word of a page; returns ``analyzer``.

    Their services build the text from the page's floating text blocks only
    (``image_to_lm_features``), and without a layout model a page has none: the sequence model
    classifies empty text (every page the same distribution), the token model tags no word.
    ``include_residual_text_container=True`` makes the words outside any block count as text.
    Layout models (LayoutLM, LiLT, ...) read the words directly and are left as they are."""
    for component in getattr(analyzer, "pipe_component_list", []):
        model = getattr(component, "language_model", None)
        kwargs = getattr(component, "required_kwargs", None)
        mapping = getattr(model, "image_to_features_mapping", None)
        if isinstance(kwargs, dict) and mapping is not None and mapping() == "image_to_lm_features":
            kwargs["include_residual_text_container"] = True
    return analyzer


def ocr_available() -> bool:
    """Whether an OCR engine (tesseract) is on the PATH, for image input."""
    return shutil.which("tesseract") is not None


NO_PAGES = "no pages (deepdoctection read 0 pages from it)"
"""Why a document that yields no page is reported (a PDF with 0 pages)."""


def reason(error: Exception, source: str | None = None) -> str:
    """Why a document could not be read, in a few words (for warnings and status columns); a
    PDF library's ``<_io.BytesIO object>`` in the message becomes ``source``, the file's name.

    Examples:
        >>> reason(ValueError("stream <_io.BytesIO object at 0x7f3a> has no trailer"), "a.pdf")
        'unreadable (ValueError: stream a.pdf has no trailer)'
    """
    name = type(error).__name__
    if "Decrypt" in name or "encrypt" in str(error).lower():
        return "encrypted PDF (no password given)"
    text = re.sub(r" at 0x[0-9a-f]+", "", str(error))  # no object addresses in a user's log
    if source is not None:  # deepdoctection hands the PDF's bytes over in a BytesIO
        text = re.sub(r"<_io\.\w+ object>", lambda _: source, text)
    return f"unreadable ({name}: {text[:120]})"


def quiet_libraries() -> None:
    """Libraries log at ERROR only and drop their UserWarnings (deepdoctection's per-page log
    lines, torch's deprecation notes), so that what is printed is probhook's."""
    import logging
    import warnings

    os.environ.setdefault("LOG_LEVEL", "ERROR")  # deepdoctection reads it when first imported
    import torch  # noqa: F401  (torch resets its loggers' levels on import: import it first)

    names = ("dd_core", "deepdoctection", "pypdf", "pdfminer", "transformers", "timm", "torch")
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def read_config(folder: Path, missing: str) -> dict[str, Any]:
    """A model folder's ``config.json``, or a usage error (``missing`` when there is none)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UsageError(missing)
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"{config_path} is not valid JSON ({error})") from None
    return config
