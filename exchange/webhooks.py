"""The highlight webhooks' outbox: at-least-once deliveries that outlive a restart.

A fired highlight is queued once per configured webhook in Redis, under one hash
tag: `{hlq}:due`, a sorted set of deliveries scored by when each is next due,
and `{hlq}:items`, each one's record (wire.WebhookDelivery: the URL, the
highlight, the attempts so far). Every exchange's sender task *claims* due
deliveries with a script that moves them a lease into the future — two
exchanges never send one at once, and one that dies mid-delivery leaves it due
again when the lease runs out — posts them signed (common/webhooks.py), then
removes them (delivered), reschedules them with exponential backoff (failed),
or drops them (out of attempts, or its webhook is no longer configured):
`webhooks.delivered`, `.retried`, `.dropped`. The outbox holds at most
HIGHLIGHT_WEBHOOK_QUEUE deliveries; more are dropped and counted. None of this
runs on the chat path: a receiver that is down or slow costs its deliveries
and nothing else.
"""
from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import msgspec
import structlog
from redis.exceptions import NoScriptError

from common import wire
from common.metrics import Metrics
from common.shards import Shard, ShardSet, ShardUnavailable, pipeline_call
from common.tasks import cancel_and_wait
from common.webhooks import Signer, WebhookSettings, backoff, post
from common.wire import Highlight, WebhookDelivery

log = structlog.get_logger()

DUE = "{hlq}:due"
ITEMS = "{hlq}:items"
POLL = 0.25  # seconds between looks for due deliveries
CONCURRENCY = 16  # deliveries in flight per exchange
LEASE_MARGIN_MS = 10_000  # a claim lasts the post's timeout and this much more

# KEYS: due, items. ARGV: the outbox's bound, now (ms), then pairs of delivery key and record.
# Queues each delivery not already there while the outbox has room; returns how many had none.
ENQUEUE = """
local dropped = 0
for i = 3, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
      dropped = dropped + 1
    else
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
      redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    end
  end
end
return dropped
"""
# KEYS: due, items. ARGV: now (ms), the lease's end (ms), how many. Returns key, record, key, record, …
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, key in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], key)
  out[#out + 1] = key
  out[#out + 1] = redis.call('HGET', KEYS[2], key) or ''
end
return out
"""
SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in (ENQUEUE, CLAIM)}


def now_ms() -> int:
    return int(time.time() * 1000)


def delivery_key(url: str, highlight_id: str) -> str:
    return f"{hashlib.sha1(url.encode()).hexdigest()[:12]}|{highlight_id}"


async def _script(shard: Shard, op: str, script: str, args: list) -> object:
    command = ("EVALSHA", SHAS[script], 2, DUE, ITEMS, *args)
    [result] = await pipeline_call(shard, op, [command])
    if isinstance(result, NoScriptError):  # a restarted shard forgot it
        await shard.call("script_load", lambda client: client.script_load(script))
        [result] = await pipeline_call(shard, op, [command])
    if isinstance(result, Exception):
        raise ShardUnavailable(shard.address, op, str(result)[:200])
    return result


class Outbox:
    def __init__(self, shards: ShardSet, settings: WebhookSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.shard = shards.for_key(DUE)
        self.signer = Signer(settings.secret)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                                              skip_auto_headers=("User-Agent",))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        claimed = list(self._inflight)
        for task in list(self._inflight.values()):
            await cancel_and_wait(task)
        if claimed:  # due again at once for whoever runs next, rather than after the lease
            try:
                await pipeline_call(self.shard, "webhook_release",
                                    [("ZADD", DUE, "XX", now_ms(), key) for key in claimed])
            except ShardUnavailable:
                pass
        if self._session is not None:
            await self._session.close()

    async def enqueue(self, highlights: list[Highlight]) -> None:
        """Queue each highlight for every webhook (ShardUnavailable: try again later)."""
        now = now_ms()
        args: list[object] = [self.settings.queue, now]
        for highlight in highlights:
            body = msgspec.Raw(wire.encode(highlight))
            for url in self.settings.urls:
                args += [delivery_key(url, highlight.id), wire.encode(WebhookDelivery(url, body, 0, now))]
        dropped = int(await _script(self.shard, "webhook_enqueue", ENQUEUE, args))  # type: ignore[call-overload]
        self.metrics.incr("webhooks.queued", (len(args) - 2) // 2 - dropped)
        if dropped:
            self.metrics.incr("webhooks.dropped", dropped)
            log.warning("webhook_queue_full", remote="redis", dropped=dropped, queue=self.settings.queue)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            room = CONCURRENCY - len(self._inflight)
            if room <= 0:
                continue
            lease_end = now_ms() + int(self.settings.timeout * 1000) + LEASE_MARGIN_MS
            try:
                claimed = await _script(self.shard, "webhook_claim", CLAIM, [now_ms(), lease_end, room])
            except ShardUnavailable:
                continue  # logged by the shard; due deliveries wait for the next look
            assert isinstance(claimed, list)
            for key, record in zip(claimed[::2], claimed[1::2], strict=True):
                name = key.decode()
                task = asyncio.get_running_loop().create_task(self._deliver(name, record))
                self._inflight[name] = task
                task.add_done_callback(lambda _, name=name: self._inflight.pop(name, None))

    async def _deliver(self, key: str, record: bytes) -> None:
        try:
            delivery = wire.decode(record, WebhookDelivery)
        except wire.DecodeError:
            await self._drop(key, "", "unreadable record")
            return
        if delivery.url not in self.settings.urls:
            await self._drop(key, delivery.url, "webhook no longer configured")
            return
        assert self._session is not None
        started = time.perf_counter()
        reason = await post(self._session, delivery.url, bytes(delivery.body), key.split("|", 1)[1], self.signer,
                            self.settings.timeout)
        after_ms = round((time.perf_counter() - started) * 1000)
        self.metrics.timing("webhooks.post", after_ms)
        try:
            if not reason:
                await pipeline_call(self.shard, "webhook_done", [("ZREM", DUE, key), ("HDEL", ITEMS, key)])
                self.metrics.incr("webhooks.delivered")
                return
            delivery.attempts += 1
            log.warning("webhook_failed", remote=f"webhook:{delivery.url}", reason=reason, after_ms=after_ms,
                        id=key.split("|", 1)[1], attempts=delivery.attempts)
            if delivery.attempts >= self.settings.attempts:
                await self._drop(key, delivery.url, f"{delivery.attempts} attempts failed")
                return
            due = now_ms() + int(backoff(delivery.attempts, self.settings.backoff) * 1000)
            await pipeline_call(self.shard, "webhook_retry",
                                [("HSET", ITEMS, key, wire.encode(delivery)), ("ZADD", DUE, "XX", due, key)])
            self.metrics.incr("webhooks.retried")
        except ShardUnavailable:
            pass  # the claim runs out and the delivery is due again: at least once

    async def _drop(self, key: str, url: str, why: str) -> None:
        self.metrics.incr("webhooks.dropped")
        log.warning("webhook_dropped", remote=f"webhook:{url}", id=key.split("|", 1)[-1], reason=why)
        try:
            await pipeline_call(self.shard, "webhook_done", [("ZREM", DUE, key), ("HDEL", ITEMS, key)])
        except ShardUnavailable:
            pass
