"""Delivery to one edge: a queue drained by one sender task, at least once.

One request in flight per edge keeps every edge's copy in the same order.
Everything queued goes in the next POST, split so that no request comes near
the edge's body limit. A POST that fails or times out is sent again (the edge
drops what it already has by sequence number); only an edge that fails
MAX_FAILURES times in a row is forgotten, and it re-subscribes, with a replay of
what it missed, once it answers its heartbeat again.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import structlog

from common import wire
from common.internal_http import InternalClient, RemoteError
from common.metrics import Metrics
from common.tasks import cancel_and_wait
from common.wire import DeliverReply

log = structlog.get_logger()

MAX_FAILURES = 5
# Bounds of one delivery request, far below the edge's 16 MiB body limit.
MAX_BATCH_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 5000
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)


class EdgeLink:
    def __init__(self, url: str, client: InternalClient, boot: str, metrics: Metrics, max_queue: int) -> None:
        self.url = url
        self.client = client
        self.metrics = metrics
        self.max_queue = max_queue
        self.channels: set[str] = set()
        # (is a MOVED marker, encoded event or marker)
        self.queue: deque[tuple[bool, bytes]] = deque()
        self.failures = 0
        self._prefix = b'{"boot":' + wire.encode(boot) + b',"events":'
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, on_dead: Callable[[EdgeLink], None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(on_dead))

    def enqueue(self, encoded: bytes, marker: bool = False) -> None:
        self.queue.append((marker, encoded))
        if len(self.queue) > self.max_queue:
            # The edge sees the hole in the sequence and heals it from the history.
            self.queue.popleft()
            self.metrics.incr("deliver.dropped")
        self._wakeup.set()

    def enqueue_all(self, encoded: list[bytes]) -> None:
        for item in encoded:
            self.enqueue(item)

    def _next_batch(self) -> tuple[bytes, int]:
        """Take what fits in one request off the queue: (body, events)."""
        events: list[bytes] = []
        moves: list[bytes] = []
        size = 0
        while self.queue and len(events) < MAX_BATCH_EVENTS:
            marker, item = self.queue[0]
            if events and size + len(item) > MAX_BATCH_BYTES:
                break
            self.queue.popleft()
            size += len(item) + 1
            if marker:
                moves.append(item)
                break  # the edge follows a move after the batch's events: nothing may come after it
            events.append(item)
        body = wire.encode_list(self._prefix, events, b',"moves":' + b"[" + b",".join(moves) + b"]}")
        return body, len(events)

    async def _run(self, on_dead: Callable[[EdgeLink], None]) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.queue:
                body, count = self._next_batch()
                while not await self._send(body, count):
                    if self.failures >= MAX_FAILURES:
                        on_dead(self)
                        return
                    await asyncio.sleep(RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS)) - 1])

    async def _send(self, body: bytes, count: int) -> bool:
        try:
            await self.client.post("/v1/deliver", body, op="deliver", answer=DeliverReply)
        except RemoteError:
            self.failures += 1
            self.metrics.incr("deliver.retried", count)
            return False
        self.failures = 0
        self.metrics.incr("deliver.batches")
        self.metrics.incr("deliver.messages", count)
        return True

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await self.client.close()
