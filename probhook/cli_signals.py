"""Signals for the command line: SIGTERM and Ctrl-C end a run after the current page, with the
rows file closed complete; while it is being closed, signals wait."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def handled(handler: Callable[[int, FrameType | None], Any] | int) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGINT inside the block, the previous ones after it (in the
    main thread only: elsewhere Python cannot handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, previous in before.items():
            signal.signal(s, previous)


def ignored() -> contextlib.AbstractContextManager[None]:
    """No signal interrupts the block (closing the rows file)."""
    return handled(signal.SIG_IGN)


class StopRequest:
    """SIGTERM and Ctrl-C ask the run to stop after the current page; a second signal stops
    at once."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def installed(self) -> contextlib.AbstractContextManager[None]:
        """Handle SIGTERM and SIGINT inside the block."""
        return handled(self._handle)

    @property
    def name(self) -> str | None:
        """``SIGTERM`` / ``SIGINT`` once a stop was asked for."""
        return None if self.signal is None else signal.Signals(self.signal).name
