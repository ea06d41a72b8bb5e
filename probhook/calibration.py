"""Temperature scaling and split conformal prediction sets.

>>> import numpy as np
>>> from probhook.calibration import fit_temperature, conformal_threshold, prediction_sets
>>> rng = np.random.default_rng(0)
>>> logits = rng.normal(size=(500, 4)) * 5
>>> targets = (logits + rng.normal(size=(500, 4)) * 5).argmax(axis=1)
>>> fit_temperature(logits, targets) > 1  # over-confident logits get softened
True
>>> probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
>>> q = conformal_threshold(probs, targets, alpha=0.1)
>>> prediction_sets(probs, q).shape
(500, 4)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Method = Literal["lac", "aps"]


def fit_temperature(logits: npt.ArrayLike, targets: npt.ArrayLike, *, max_iter: int = 200) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on labelled rows.

    Pass it back as ``capture_probs(..., temperature=T)``; logits come from a capture made with
    ``keep_logits=True``.
    """
    import torch

    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(
            f"need logits (n, C) and targets (n,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("logits contain NaN or inf: drop non-finite rows (see .finite) first")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) > 0
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.exp().item())


def _scores(
    probs: npt.NDArray[np.float64], method: Method, u: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]:
    """Non-conformity of every class in every row (lower = more conforming).

    APS: the mass of the classes ranked above, plus the class's own mass (all of it, or a
    uniform share ``u`` per row for randomised APS).
    """
    if method == "lac":
        return 1.0 - probs
    if method == "aps":
        order = np.argsort(-probs, axis=1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
        scores = np.empty_like(probs)
        np.put_along_axis(scores, order, cumulative, axis=1)
        return scores if u is None else scores - (1.0 - u[:, None]) * probs
    raise ValueError(f"method must be 'lac' or 'aps', got {method!r}")


def _uniform(n: int, randomized: bool, seed: int | None) -> npt.NDArray[np.float64] | None:
    return np.random.default_rng(seed).random(n) if randomized else None


def conformal_threshold(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    alpha: float = 0.1,
    method: Method = "lac",
    *,
    randomized: bool = False,
    seed: int | None = None,
) -> float:
    """Split-conformal threshold from a labelled calibration set at miscoverage ``alpha``.

    Sets built with it contain the true class with probability >= 1 - alpha for exchangeable
    data. LAC gives the smallest sets; APS adapts set size to how spread a row is. Plain APS is
    deterministic and conservative (it keeps the class that crosses the threshold);
    ``randomized=True`` gives coverage close to exactly 1 - alpha and smaller sets. Use the same
    ``method`` and ``randomized`` for :func:`prediction_sets`.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = len(p)
    if n == 0 or t.shape != (n,):
        raise ValueError(
            f"need a non-empty calibration set with one target per row, got {p.shape}, {t.shape}"
        )
    level = np.ceil((n + 1) * (1 - alpha)) / n
    if level > 1:
        raise ValueError(
            f"{n} calibration rows are too few for alpha={alpha}; "
            f"need >= {int(np.ceil(1 / alpha)) - 1}"
        )
    true_scores = _scores(p, method, _uniform(n, randomized, seed))[np.arange(n), t]
    return float(np.quantile(true_scores, level, method="higher"))


def prediction_sets(
    probs: npt.ArrayLike,
    threshold: float,
    method: Method = "lac",
    *,
    randomized: bool = False,
    seed: int | None = None,
) -> npt.NDArray[np.bool_]:
    """``(n, C)`` membership mask of each row's prediction set."""
    p = np.asarray(probs, dtype=np.float64)
    scores = _scores(p, method, _uniform(len(p), randomized, seed))
    if method == "aps" and not randomized:  # keep the class that crosses the threshold
        return (scores - p) < threshold
    return scores <= threshold
