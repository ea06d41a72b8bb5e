"""Offline builders for tests (tiny seeded models, synthetic deepdoctection pages, ready
pipelines), for probhook's own tests and yours. They live in
[`probhook.integrations.deepdoctection.kit`][probhook.integrations.deepdoctection.kit], for
token classification (per-word heads) in
[`probhook.integrations.deepdoctection.token_kit`][probhook.integrations.deepdoctection.token_kit]
and, for DETR-family detectors (per-element heads), in
[`detector_kit`][probhook.integrations.deepdoctection.detector_kit]; this module is their
public name.

    from probhook.testing import build_model, make_pages, make_pipe, run_pipe

    tiny = build_model("layoutlm", tmp_path)
    pages = run_pipe(make_pipe(tiny), make_pages(4))
"""

from probhook.integrations.deepdoctection.detector_kit import *  # noqa: F403
from probhook.integrations.deepdoctection.detector_kit import __all__ as _detector_all
from probhook.integrations.deepdoctection.kit import *  # noqa: F403
from probhook.integrations.deepdoctection.kit import __all__ as _kit_all
from probhook.integrations.deepdoctection.token_kit import *  # noqa: F403
from probhook.integrations.deepdoctection.token_kit import __all__ as _token_all

__all__ = [*_kit_all, *_token_all, *_detector_all]
