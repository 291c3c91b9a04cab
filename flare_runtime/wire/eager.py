"""Starting a call's handler eagerly: inside the callback that decoded its request.

A handler that never suspends then costs no task, and its response leaves in the
same write as the batch its request arrived in (docs/runtime.md, "Eager handlers").
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, cast

NATIVE_EAGER_TASKS = sys.version_info >= (3, 12)
"""asyncio has eager tasks (``Task(..., eager_start=True)``) from Python 3.12."""


def start_eagerly(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None] | None:
    """Run `coro` now until it first suspends; return the task that finishes it, or None.

    Python 3.12+: an asyncio eager task. Python 3.11 has none, so the coroutine
    takes its first step here, in a copy of the current context as a task
    would, and only a coroutine that suspends gets a task (`_Resume`) to
    continue in; until then ``asyncio.current_task()`` is not its task.
    """
    if NATIVE_EAGER_TASKS:
        task = cast(Any, asyncio.Task)(coro, loop=loop, eager_start=True)
        return None if task.done() else cast("asyncio.Task[None]", task)
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration:
        return None
    except Exception as exc:  # what a task would have logged as never retrieved
        loop.call_exception_handler({"message": "eagerly started call failed", "exception": exc})
        return None
    return loop.create_task(_Resume(coro, pending), context=context)


class _Resume(collections.abc.Coroutine[Any, Any, None]):
    """A coroutine that already took its first step, for a task to finish (Python 3.11).

    Delete it, and the Python 3.11 branch of `start_eagerly`, once Flare requires
    Python 3.12: asyncio's eager tasks then do all of this.

    The task's first `send` gets back what that step yielded (the future the
    coroutine waits on), so the task waits on it as it would have; everything
    after goes straight to the coroutine. A cancellation thrown in before that
    first `send` cancels the awaited future and reaches the coroutine, as it
    would in a task.
    """

    __slots__ = ("coro", "pending")

    _TAKEN: Any = object()

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        self.coro = coro
        self.pending = pending  # what the first step yielded, until the task takes it

    def send(self, value: Any) -> Any:
        pending = self.pending
        if pending is not _Resume._TAKEN:
            self.pending = _Resume._TAKEN
            return pending
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        pending = self.pending
        if pending is not _Resume._TAKEN:
            self.pending = _Resume._TAKEN
            if isinstance(pending, asyncio.Future):
                pending.cancel()
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)  # pragma: no cover - the deprecated form

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Generator[Any, Any, None]:  # pragma: no cover - tasks use send
        raise TypeError("_Resume is driven by its task only")
