"""Calibration maps fitted on labelled rows and applied to unlabelled ones: temperature scaling
(fitted by [`fit_temperature`][probhook.calibration.fit_temperature] on the log-probabilities)
and isotonic regression of the top probability on correctness.

A map changes how sure a row is, never what it predicts: the predicted class stays the argmax of
the uncalibrated row (temperature keeps the order of the classes anyway; isotonic sets the
predicted class's probability and rescales the others to the rest of the mass).

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(2000, 3)) * 2
    >>> true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    >>> targets = np.array([rng.choice(3, p=p) for p in true])
    >>> overconfident = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    >>> cal = fit_calibrator(overconfident, targets, method="temperature")
    >>> round(cal.temperature, 1)
    3.0
    >>> bool(np.allclose(cal.apply(overconfident), true, atol=0.05))
    True
    >>> iso = fit_calibrator(overconfident, targets, method="isotonic")
    >>> bool(iso.apply(overconfident).max(axis=1).mean() < overconfident.max(axis=1).mean())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from probhook.metrics import as_probs

Array = npt.NDArray[np.float64]
Method = Literal["temperature", "isotonic"]
TINY = 1e-12
"""Probabilities are clipped here before their logarithm (temperature scaling)."""


class Calibrator(Protocol):
    """A fitted calibration map: ``apply`` maps ``(n, C)`` probabilities to calibrated ones."""

    @property
    def method(self) -> str:
        """``"temperature"`` or ``"isotonic"``."""

    def apply(self, probs: npt.ArrayLike) -> Array:
        """Calibrated probabilities (rows that are not finite stay as they are)."""


@dataclass(frozen=True)
class Temperature:
    """``softmax(log p / temperature)``: above 1 softens over-confident rows."""

    temperature: float

    @property
    def method(self) -> str:
        """``"temperature"``."""
        return "temperature"

    def apply(self, probs: npt.ArrayLike) -> Array:
        """The rows with their log-probabilities divided by the temperature."""
        p = as_probs(probs)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            z = np.log(np.clip(p, TINY, None)) / self.temperature
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            out = e / e.sum(axis=1, keepdims=True)
        return np.asarray(np.where(np.isfinite(p).all(axis=1, keepdims=True), out, p))


@dataclass(frozen=True)
class Isotonic:
    """The probability that a row's prediction is right, as a non-decreasing function of its top
    probability: linear between the fitted points ``x`` -> ``y``, constant beyond them."""

    x: Array
    y: Array

    @property
    def method(self) -> str:
        """``"isotonic"``."""
        return "isotonic"

    def apply(self, probs: npt.ArrayLike) -> Array:
        """The predicted class gets the fitted probability of being right; the other classes
        share the rest in their old proportions (equally when the row had none left)."""
        p = as_probs(probs)
        out = p.copy()
        finite = np.isfinite(p).all(axis=1)
        q = p[finite]
        if not len(q):
            return np.asarray(out)
        rows = np.arange(len(q))
        top = q.argmax(axis=1)
        conf = q[rows, top]
        new = np.interp(conf, self.x, self.y)
        rest = 1.0 - conf
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(rest > 0, (1.0 - new) / rest, 0.0)
        r = q * scale[:, None]
        even = (1.0 - new) / max(q.shape[1] - 1, 1)
        r = np.where((rest > 0)[:, None], r, even[:, None])
        r[rows, top] = new
        out[finite] = r
        return np.asarray(out)


def isotonic_fit(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[Array, Array]:
    """Pool-adjacent-violators: the non-decreasing fit of ``y`` on ``x`` (least squares), as its
    distinct ``x`` values and the fitted value at each.

    Examples:
        >>> xs, ys = isotonic_fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
        >>> xs.tolist(), ys.tolist()
        ([0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.5, 1.0])
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xs, inverse = np.unique(xa, return_inverse=True)  # ties first pooled into their mean
    weight = np.bincount(inverse, minlength=len(xs)).astype(np.float64)
    value = np.bincount(inverse, ya, minlength=len(xs)) / np.maximum(weight, 1.0)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, w in zip(value.tolist(), weight.tolist(), strict=True):
        means.append(v)
        weights.append(w)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:  # a violation: pool the two blocks
            w2 = weights[-2] + weights[-1]
            m2 = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w2
            s2 = sizes[-2] + sizes[-1]
            del means[-1], weights[-1], sizes[-1]
            means[-1], weights[-1], sizes[-1] = m2, w2, s2
    return xs, np.repeat(np.array(means), sizes)


def fit_calibrator(
    probs: npt.ArrayLike, targets: npt.ArrayLike, method: Method = "temperature"
) -> Temperature | Isotonic:
    """A calibration map fitted on labelled rows: ``probs`` ``(n, C)`` and their target class
    indices. Rows that are not finite are left out of the fit."""
    p = as_probs(probs)
    t = np.asarray(targets)
    if t.shape != (len(p),) or t.dtype.kind not in "iu":
        raise ValueError(
            f"targets must be {len(p)} class indices, one per row; got {t.dtype} of shape {t.shape}"
        )
    finite = np.isfinite(p).all(axis=1)
    p, t = p[finite], t[finite].astype(np.int64)
    if len(p) == 0:
        raise ValueError("no finite labelled rows to fit a calibration map on")
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"targets must lie in 0..{p.shape[1] - 1}")
    if method == "temperature":
        from probhook.calibration import fit_temperature

        return Temperature(fit_temperature(np.log(np.clip(p, TINY, None)), t))
    if method == "isotonic":
        correct = (p.argmax(axis=1) == t).astype(np.float64)
        return Isotonic(*isotonic_fit(p.max(axis=1), correct))
    raise ValueError(f"method must be 'temperature' or 'isotonic', got {method!r}")


def as_calibrator(value: Any) -> Calibrator | None:
    """``value`` when it is a fitted map (has ``apply``), None for None."""
    if value is None:
        return None
    if callable(getattr(value, "apply", None)):
        calibrator: Calibrator = value
        return calibrator
    raise TypeError(
        "expected a fitted calibration map (fit_calibrator(...)) or (reference, targets); "
        f"got {type(value).__name__}"
    )
