"""``Loop``: an event loop in a daemon thread, and the bridge from blocking code into it
(``run`` a coroutine, ``iterate`` an async iterator), which ``StudioClient`` is built on.
Imports the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Loop"]

T = TypeVar("T")


class Loop:
    """An event loop in a daemon thread, and the bridge from blocking code into it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="studio-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:  # from a progress callback: a deadlock
            coro.close()
            raise RuntimeError("a StudioClient cannot be called from its own callbacks")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C, or the caller gave up: stop the call too
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await items.__anext__()
            except StopAsyncIteration:
                return False, None

        async def close() -> None:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]  # an item when more is True
        finally:
            if not self.loop.is_closed():
                # After a Ctrl-C the cancelled step may still be unwinding: closing then
                # finds the generator running, and it is being closed anyway.
                with contextlib.suppress(RuntimeError):
                    self.run(close())

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
