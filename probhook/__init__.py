"""probhook: the full probability distribution behind every LayoutLM-family prediction.

>>> import torch, probhook
>>> model = torch.nn.Linear(8, 4)
>>> with probhook.capture_probs(model) as cap:
...     _ = model(torch.randn(3, 8))
>>> cap.probs.shape
(3, 4)
"""

from probhook.buffer import BufferFullError, ProbBuffer, Sink
from probhook.capture import Capture, HeadView, capture_probs
from probhook.distribution import Distribution

__all__ = [
    "BufferFullError",
    "Capture",
    "Distribution",
    "HeadView",
    "ProbBuffer",
    "Sink",
    "capture_probs",
]
__version__ = "0.1.0"
