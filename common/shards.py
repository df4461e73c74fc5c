"""Redis sharded by key with consistent hashing, one bounded pool per shard.

Every call is bounded by CACHE_TIMEOUT (connection wait, socket and total),
timed per shard in statsd, and logged with the shard's address when it fails.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from common.metrics import Metrics
from common.ring import Ring

log = structlog.get_logger()
T = TypeVar("T")
# A read someone waits on (a page, the console, an API list) may take this many CACHE_TIMEOUTs:
# it is not on the chat's hot path, may read hundreds of entries, and on a busy machine a
# refusal after 100 ms would be an error for a person rather than a saved message.
READ_BUDGET = 10


class ShardUnavailable(Exception):
    """A shard did not answer within CACHE_TIMEOUT or refused the call."""

    def __init__(self, shard: str, op: str, reason: str, refused: bool = False) -> None:
        super().__init__(f"redis {shard} {op}: {reason}")
        self.shard = shard
        # The connection was refused: the shard never saw the call.
        self.refused = refused


class Shard:
    def __init__(self, host: str, port: int, max_conns: int, timeout: float, metrics: Metrics) -> None:
        self.address = f"{host}:{port}"
        self.metric_name = f"{host.replace('.', '_')}_{port}"
        self.timeout = timeout
        self.read_timeout = READ_BUDGET * timeout  # for reads someone waits on
        self._metrics = metrics
        self.pool = redis.BlockingConnectionPool(
            host=host,
            port=port,
            max_connections=max_conns,
            timeout=timeout,  # waiting for a free connection
            # Reads are bounded per call by `call()`, which may allow a check longer than CACHE_TIMEOUT.
            socket_timeout=None,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self.client = redis.Redis(connection_pool=self.pool)
        # Pub/sub holds its connection open and waits on it indefinitely, so it
        # gets its own client outside the bounded, timed pool.
        self.pubsub_client = redis.Redis(host=host, port=port, socket_connect_timeout=timeout)
        metrics.gauge_from(f"redis.{self.metric_name}.pool_in_use", lambda: len(self.pool._in_use_connections))

    async def call(self, op: str, work: Callable[[redis.Redis], Awaitable[T]], timeout: float | None = None) -> T:
        """Run `work` on a pooled connection, bounded by CACHE_TIMEOUT (or `timeout`)."""
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(work(self.client), timeout or self.timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            after_ms = round((time.perf_counter() - started) * 1000)
            self._metrics.incr(f"redis.{self.metric_name}.{op}.failed")
            log.warning(reason if reason == "timeout" else "redis_failed", remote="redis",
                        shard=self.address, op=op, after_ms=after_ms, detail=str(exc)[:200])
            refused = isinstance(exc, (RedisConnectionError, OSError)) and "refused" in str(exc).lower()
            raise ShardUnavailable(self.address, op, reason, refused=refused) from None
        self._metrics.timing(f"redis.{self.metric_name}.{op}", (time.perf_counter() - started) * 1000)
        return result

    async def close(self) -> None:
        await self.client.aclose()
        await self.pool.disconnect()
        await self.pubsub_client.aclose()


class ShardSet:
    def __init__(self, servers: list[tuple[str, int]], max_conns: int, timeout: float, metrics: Metrics) -> None:
        self.shards = {f"{host}:{port}": Shard(host, port, max_conns, timeout, metrics) for host, port in servers}
        self.ring = Ring(self.shards)
        self.read_timeout = READ_BUDGET * timeout  # for reads someone waits on

    def for_key(self, key: str) -> Shard:
        return self.shards[self.ring.node_for(key)]

    def __iter__(self):
        return iter(self.shards.values())

    async def close(self) -> None:
        for shard in self.shards.values():
            await shard.close()


def user_key(user_id: str, suffix: str) -> str:
    """Keys of one user share a hash tag, so they live on one shard."""
    return f"{{u:{user_id}}}:{suffix}"


def channel_key(channel: str, suffix: str) -> str:
    return f"{{c:{channel}}}:{suffix}"


async def pipeline_call(shard: Shard, op: str, commands: list[tuple[Any, ...]], timeout: float | None = None
                        ) -> list[Any]:
    """Send several commands to one shard in one round trip; errors come back as values."""

    async def work(client: redis.Redis) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)

    return await shard.call(op, work, timeout)


class Script:
    """A Lua script, run on a shard by its SHA and loaded there the first time the shard does not know it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, shards: ShardSet, op: str, keys: list[str], args: list[Any]) -> Any:
        """Run on the shard of `keys[0]` (every key shares its hash tag). Raises ShardUnavailable."""
        shard = shards.for_key(keys[0])
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        [result] = await pipeline_call(shard, op, [command])
        if isinstance(result, NoScriptError):
            await shard.call("script_load", lambda client: client.script_load(self.source))
            [result] = await pipeline_call(shard, op, [command])
        if isinstance(result, Exception):
            raise ShardUnavailable(shard.address, op, str(result)[:200])
        return result
