import atexit
import shutil
import tempfile

import pytest

from probhook.testing import TinyModel, build_model, offline_environment

_DD_CACHE = tempfile.mkdtemp(prefix="probhook-dd-cache-")
atexit.register(shutil.rmtree, _DD_CACHE, ignore_errors=True)
offline_environment(_DD_CACHE)  # before anything imports deepdoctection


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """``tiny(kind, **options)``: a saved tiny model, built once per test session."""
    cache: dict[tuple, TinyModel] = {}

    def get(kind: str = "layoutlm", **options) -> TinyModel:
        key = (kind, tuple(sorted(options.items())))
        if key not in cache:
            path = tmp_path_factory.mktemp(f"{kind}-model")
            cache[key] = build_model(kind, path, **options)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def detector(tmp_path_factory):
    """``detector(kind, **options)``: a saved tiny DETR-family detector, built once per session."""
    from probhook.testing import build_detector

    cache: dict[tuple, object] = {}

    def get(kind: str = "deformable_detr", **options):
        key = (kind, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                  for k, v in options.items())))  # fmt: skip
        if key not in cache:
            cache[key] = build_detector(
                kind, tmp_path_factory.mktemp(f"{kind}-detector"), **options
            )
        return cache[key]

    return get
