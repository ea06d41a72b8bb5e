"""probhook: the full probability distribution behind every LayoutLM-family prediction.

>>> import torch, probhook
>>> model = torch.nn.Linear(8, 4)
>>> with probhook.capture_probs(model) as cap:
...     _ = model(torch.randn(3, 8))
>>> cap.probs.shape
(3, 4)
"""

from probhook import metrics
from probhook.buffer import BufferFullError, ProbBuffer
from probhook.capture import Capture, capture_probs
from probhook.distribution import Distribution, DocumentDistribution
from probhook.export import load
from probhook.rows import Sink
from probhook.views import HeadView

__all__ = [
    "BufferFullError",
    "Capture",
    "Distribution",
    "DocumentDistribution",
    "HeadView",
    "ProbBuffer",
    "Sink",
    "capture_probs",
    "load",
    "metrics",
]
__version__ = "0.1.0"
