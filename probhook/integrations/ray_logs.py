"""Ray's own output for ``probhook run --engine ray -q``: its Python loggers, Ray Data's
execution notes and the C++ core worker's lines (written to stderr's descriptor directly)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_ray(quiet: bool) -> Iterator[None]:
    """With ``quiet``: Ray's own log lines (its Python loggers, Ray Data's execution notes and
    the C++ core worker's, which write to stderr directly) are not shown inside the block."""
    if not quiet:
        yield
        return
    import ray.data  # noqa: F401  (Ray Data sets its loggers' levels when imported)

    loggers = {n: logging.getLogger(n) for n in ("ray", "ray.data")}
    levels = {n: lg.level for n, lg in loggers.items()}
    backend = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    for lg in loggers.values():
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, lg in loggers.items():
            lg.setLevel(levels[n])
        if backend is None:
            del os.environ["RAY_BACKEND_LOG_LEVEL"]
        else:
            os.environ["RAY_BACKEND_LOG_LEVEL"] = backend


@contextlib.contextmanager
def held_stderr(hold: bool) -> Iterator[None]:
    """With ``hold``, what is written to stderr's descriptor inside the block (the core worker
    announces the log level it was given) is shown only if the block fails."""
    if not hold:
        yield
        return
    import sys
    import tempfile

    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
