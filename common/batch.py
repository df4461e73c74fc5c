"""Coalesce many small requests to one remote into one request per loop tick.

Callers `submit()` an item and get a future; a single sender task takes every
item waiting, sends them as one batch and resolves each future from the
answer. While a batch is in flight the next one accumulates, so batches grow
with load instead of requests multiplying.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from common.tasks import cancel_and_wait

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_batch: int = 1000,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Result]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, item: Item) -> asyncio.Future[Result]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._futures.append(future)
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._items:
                items = self._items[: self._max_batch]
                futures = self._futures[: self._max_batch]
                del self._items[: self._max_batch]
                del self._futures[: self._max_batch]
                await self._flush(items, futures)

    async def _flush(self, items: list[Item], futures: list[asyncio.Future[Result]]) -> None:
        try:
            results = await self._send(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch answered {len(results)} results for {len(items)} items")
        except Exception as exc:  # every waiter learns of the failure; the loop lives on
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        for future in self._futures:
            if not future.done():
                future.cancel()
