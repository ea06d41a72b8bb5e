"""Captures as decorators: plain, generator and ``async def`` functions, with overlapping calls.

Examples:
    >>> import torch
    >>> from probhook import capture_probs
    >>> model = torch.nn.Linear(4, 2)
    >>> @capture_probs(model)
    ... def twice(x):
    ...     return model(x), model(x)
    >>> _ = twice(torch.randn(3, 4))
    >>> len(twice.capture)
    6
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from probhook.capture import Capture

F = TypeVar("F", bound=Callable[..., Any])


def decorate(capture: Capture, fn: F) -> F:
    """Decorate ``fn``: each call runs inside this capture; ``fn.capture`` is the capture.

    Calls may overlap (recursion, threads): the hooks stay while any call runs, and rows
    of every call are kept. A generator function is captured while it is iterated, an
    ``async def`` function while it is awaited.
    """
    if inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{fn.__qualname__} is an async generator: capture inside it with "
            "`with capture_probs(model) as cap:` instead"
        )
    calls = OverlappingCalls(capture)
    path: list[str] = capture.target.split(".") if isinstance(capture.target, str) else []
    param = path[0] if path else None
    signature = inspect.signature(fn)
    if param is not None and param not in signature.parameters:
        raise TypeError(f"{fn.__qualname__} has no parameter {param!r} to capture")

    def target_of(args: Any, kwargs: Any) -> Any:
        if param is None:
            return None
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        target = bound.arguments[param]
        for attr in path[1:]:  # "self.model" on a method
            target = getattr(target, attr)
        return target

    wrapper: Any
    if inspect.isgeneratorfunction(fn):

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with calls.call(target_of(args, kwargs)) as done:
                result = yield from fn(*args, **kwargs)
                done()
                return result

    elif inspect.iscoroutinefunction(fn):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            with calls.call(target_of(args, kwargs)) as done:
                result = await fn(*args, **kwargs)
                done()
                return result

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with calls.call(target_of(args, kwargs)) as done:
                result = fn(*args, **kwargs)
                done()
                return result

    wrapper = functools.wraps(fn)(wrapper)
    wrapper.capture = capture
    return wrapper  # type: ignore[no-any-return]


class OverlappingCalls:
    """Decorated calls that overlap (recursion, threads): the first starts the capture, the
    last stops it, and every call's rows are kept."""

    def __init__(self, capture: Capture) -> None:
        self.capture, self.running, self.target = capture, 0, None
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def call(self, target: Any) -> Iterator[Callable[[], None]]:
        """One call; the callable it yields marks the call as finished without an error."""
        ok = [False]
        with self.lock:
            if self.running == 0:
                self.capture.start(target)
                self.target = target
            elif target is not self.target:
                raise RuntimeError(
                    "a decorated call with another model started while one with "
                    f"{type(self.target).__name__} runs; use one capture per model"
                )
            self.running += 1
        try:
            yield lambda: ok.__setitem__(0, True)
        finally:
            with self.lock:
                self.running -= 1
                if self.running == 0:
                    self.capture.stop(warn=ok[0])
