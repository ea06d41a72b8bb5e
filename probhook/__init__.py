"""probhook: the full probability distribution behind every LayoutLM-family prediction.

Examples:
    >>> import torch, probhook
    >>> model = torch.nn.Linear(8, 4)
    >>> with probhook.capture_probs(model) as cap:
    ...     _ = model(torch.randn(3, 8))
    >>> cap.probs.shape
    (3, 4)
"""

from probhook import calibration, metrics
from probhook.buffer import BufferFullError, ProbBuffer
from probhook.capture import Capture, capture_probs
from probhook.distribution import Distribution, DocumentDistribution
from probhook.drift import compare
from probhook.element_view import load
from probhook.head_view import HeadView
from probhook.sink import Sink

__all__ = [
    "BufferFullError",
    "Capture",
    "Distribution",
    "DocumentDistribution",
    "HeadView",
    "ProbBuffer",
    "Sink",
    "calibration",
    "capture_probs",
    "compare",
    "load",
    "metrics",
]
__version__ = "0.1.0"
