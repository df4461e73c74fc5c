"""The edge's calls upstream: clue for logins, joins and messages; the
exchange for channel subscriptions."""
from __future__ import annotations

import asyncio
from typing import Any

import structlog

from common.batch import Batcher
from common.internal_http import InternalClient, RemoteError
from common.metrics import Metrics
from common.ring import Ring
from common.tasks import cancel_and_wait
from common.tokens import Identity

log = structlog.get_logger()

# How often the edge checks that each exchange still holds its subscriptions.
HEARTBEAT_INTERVAL = 1.0


class ClueClient:
    """Talks to the clue pool.

    A user's requests always go to the same healthy clue, so their messages
    keep their order. A clue that refuses connections is taken out of the ring
    and its requests go to the next one; a health check every second brings it
    back. A timeout is not retried (the clue may have accepted the message):
    the sender is told instead.
    """

    def __init__(self, urls: list[str], token: str, metrics: Metrics, timeout: float) -> None:
        self._urls = urls
        self._healthy = set(urls)
        self._ring = Ring(urls)
        self._metrics = metrics
        self._clients = {
            url: InternalClient(f"clue:{url}", url, token, metrics, timeout=timeout) for url in urls
        }
        self._batchers = {url: Batcher(self._sender(url)) for url in urls}
        self._health_task: asyncio.Task[None] | None = None
        metrics.gauge_from("clue.healthy", lambda: len(self._healthy))

    def start(self) -> None:
        self._health_task = asyncio.get_running_loop().create_task(self._check_health())

    def _pick(self, key: str) -> str:
        return self._ring.node_for(key)

    def _mark(self, url: str, healthy: bool) -> None:
        if healthy == (url in self._healthy):
            return
        if healthy:
            self._healthy.add(url)
        elif len(self._healthy) > 1:  # with none left, keep trying the last one
            self._healthy.discard(url)
        else:
            return
        log.warning("clue_health", remote="clue", url=url, healthy=healthy)
        self._ring = Ring([u for u in self._urls if u in self._healthy])

    async def _check_health(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            for url, client in self._clients.items():
                try:
                    await client.get("/health", op="health")
                except RemoteError:
                    self._mark(url, False)
                else:
                    self._mark(url, True)

    async def _call(self, key: str, path: str, payload: dict[str, Any], op: str) -> dict[str, Any]:
        url = self._pick(key)
        try:
            return await self._clients[url].post(path, payload, op=op)
        except RemoteError as exc:
            if not exc.refused:
                raise
            self._mark(url, False)
            return await self._clients[self._pick(key)].post(path, payload, op=op)

    def _sender(self, url: str):
        client = self._clients[url]

        async def send(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answer = await client.post("/v1/messages", {"messages": items}, op="messages")
            return answer["results"]

        return send

    async def login(self, token: str) -> Identity | None:
        """The identity a token names, or None when clue refuses it."""
        try:
            answer = await self._call(token[-16:], "/v1/login", {"token": token}, op="login")
        except RemoteError as exc:
            if exc.reason.startswith(("HTTP 401", "HTTP 429")):
                return None
            raise
        return Identity.from_dict(answer["identity"])

    async def join(self, channel: str, identity: Identity | None) -> dict[str, Any]:
        key = identity.login if identity else channel
        payload = {"channel": channel, "identity": identity.to_dict() if identity else None}
        return await self._call(key, "/v1/join", payload, op="join")

    def publish(self, item: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Hand a message to the user's clue; on a refused connection, to the next."""
        login = item["identity"]["login"]
        url = self._pick(login)
        result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def settle(attempt: asyncio.Future[dict[str, Any]], retried: bool) -> None:
            if result.done():
                return
            if attempt.cancelled():
                result.cancel()
                return
            error = attempt.exception()
            if error is None:
                result.set_result(attempt.result())
            elif isinstance(error, RemoteError) and error.refused and not retried:
                self._mark(url, False)
                self._metrics.incr("clue.failover")
                retry = self._batchers[self._pick(login)].submit(item)
                retry.add_done_callback(lambda f: settle(f, True))
            else:
                result.set_exception(error)

        self._batchers[url].submit(item).add_done_callback(lambda f: settle(f, False))
        return result

    async def close(self) -> None:
        await cancel_and_wait(self._health_task)
        for batcher in self._batchers.values():
            await batcher.close()
        for client in self._clients.values():
            await client.close()


class ExchangeLink:
    """This edge's subscriptions at one exchange, kept in order and in sync.

    All requests to the exchange leave from one task, so subscribe, unsubscribe
    and full re-syncs can never overtake each other.
    """

    def __init__(self, url: str, edge_url: str, client: InternalClient) -> None:
        self.url = url
        self.edge_url = edge_url
        self.client = client
        self._refs: dict[str, int] = {}  # channel → local users joined or joining
        self._ops: list[tuple] = []
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._wakeup = asyncio.Event()
        self._boot: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def wanted(self) -> set[str]:
        return set(self._refs)

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Count one more local user of `channel`; the future resolves once the
        exchange has confirmed the subscription (at once if it already has)."""
        self._refs[channel] = self._refs.get(channel, 0) + 1
        if self._refs[channel] == 1:
            self._ops.append(("+", channel))
            self._wakeup.set()
            if channel not in self._waiters:
                self._waiters[channel] = asyncio.get_running_loop().create_future()
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            waiter.set_result(None)
        return waiter

    def unsubscribe(self, channel: str) -> bool:
        """Count one local user less; True when that was the last."""
        count = self._refs.get(channel, 0) - 1
        if count > 0:
            self._refs[channel] = count
            return False
        self._refs.pop(channel, None)
        self._ops.append(("-", channel))
        self._wakeup.set()
        return True

    def release(self, channel: str) -> int:
        """Give up the channel entirely (it moved); returns its local user count."""
        refs = self._refs.pop(channel, 0)
        if refs:
            self._ops.append(("-", channel))
            self._wakeup.set()
        return refs

    def adopt(self, channel: str, refs: int, replay_from: int) -> None:
        """Take over a moved channel's users, asking for what was sent since the move."""
        if refs <= 0:
            return
        first = channel not in self._refs
        self._refs[channel] = self._refs.get(channel, 0) + refs
        if first:
            self._ops.append(("+", channel, replay_from))
            self._wakeup.set()

    async def _run(self) -> None:
        await self._sync()
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), HEARTBEAT_INTERVAL)
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                if self._ops:
                    await self._send_ops()
                else:
                    await self._heartbeat()
            except Exception:  # a bug must not end this edge's subscriptions for good
                log.exception("subscription_error", remote="exchange", url=self.url)
                self._boot = None  # re-sync everything on the next heartbeat

    async def _send_ops(self) -> None:
        ops, self._ops = self._ops, []
        waiters = {
            op[1]: self._waiters.pop(op[1]) for op in ops if op[0] == "+" and op[1] in self._waiters
        }
        try:
            answer = await self.client.post(
                "/v1/subscribe", {"edge": self.edge_url, "ops": ops}, op="subscribe"
            )
        except RemoteError:
            # The next heartbeat re-syncs the whole set once the exchange answers.
            self._boot = None
            answer = None
        else:
            self._note_boot(answer)
        for waiter in waiters.values():
            if waiter.done():
                continue
            if answer is not None:
                waiter.set_result(None)
            else:
                waiter.set_exception(RemoteError(self.client.remote, "subscribe", "unavailable"))

    async def _heartbeat(self) -> None:
        try:
            answer = await self.client.post(
                "/v1/heartbeat", {"edge": self.edge_url, "count": len(self.wanted)}, op="heartbeat"
            )
        except RemoteError:
            self._boot = None
            return
        if answer.get("boot") != self._boot or answer.get("count") != len(self.wanted):
            await self._sync()

    async def _sync(self) -> None:
        """Replace everything the exchange knows of this edge with `wanted`."""
        try:
            answer = await self.client.post(
                "/v1/sync", {"edge": self.edge_url, "channels": sorted(self.wanted)}, op="sync"
            )
        except RemoteError:
            self._boot = None
            return
        if self._boot is not None:
            log.info("resubscribed", remote="exchange", url=self.url, channels=len(self.wanted))
        self._note_boot(answer)

    def _note_boot(self, answer: dict[str, Any]) -> None:
        self._boot = answer.get("boot", self._boot)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await self.client.close()


class Subscriptions:
    """Routes each channel's subscription to the exchange that owns it."""

    def __init__(self, urls: list[str], edge_url: str, token: str, metrics: Metrics, timeout: float) -> None:
        self._ring = Ring(urls)
        self.links = {
            url: ExchangeLink(url, edge_url, InternalClient(f"exchange:{url}", url, token, metrics, timeout=timeout))
            for url in urls
        }

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    def link_for(self, channel: str) -> ExchangeLink:
        return self.links[self._ring.node_for(channel)]

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        return self.link_for(channel).subscribe(channel)

    def unsubscribe(self, channel: str) -> bool:
        return self.link_for(channel).unsubscribe(channel)

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()


class Clusters:
    """The clue and exchange pools of every cluster (main, event, group…) and
    which cluster carries each channel this edge holds.

    A channel's cluster comes from clue when the first local user joins it, and
    changes when its old exchange sends MOVED during a live move.
    """

    def __init__(self, clue_urls: dict[str, list[str]], exchange_urls: dict[str, list[str]], edge_url: str,
                 token: str, metrics: Metrics, timeout: float) -> None:
        self.clues = {name: ClueClient(urls, token, metrics, timeout) for name, urls in clue_urls.items()}
        self.subscriptions = {
            name: Subscriptions(urls, edge_url, token, metrics, timeout) for name, urls in exchange_urls.items()
        }
        self.route: dict[str, str] = {}

    def start(self) -> None:
        for clue in self.clues.values():
            clue.start()
        for subscriptions in self.subscriptions.values():
            subscriptions.start()

    @property
    def main(self) -> ClueClient:
        return self.clues["main"]

    def cluster_of(self, channel: str) -> str:
        return self.route.get(channel, "main")

    def clue_for(self, channel: str) -> ClueClient:
        return self.clues.get(self.cluster_of(channel), self.main)

    def subscribe(self, channel: str, cluster: str) -> asyncio.Future[None]:
        # A channel this edge already holds keeps its cluster until MOVED says otherwise.
        cluster = self.route.setdefault(channel, cluster if cluster in self.subscriptions else "main")
        return self.subscriptions[cluster].subscribe(channel)

    def whisper_cluster(self) -> str:
        return "group" if "group" in self.subscriptions else "main"

    def unsubscribe(self, channel: str) -> None:
        cluster = self.route.get(channel)
        if cluster is not None and self.subscriptions[cluster].unsubscribe(channel):
            del self.route[channel]

    def move(self, channel: str, cluster: str, version: int) -> bool:
        """Follow a channel to its new cluster; False if there was nothing to move."""
        old = self.route.get(channel)
        if old is None or old == cluster or cluster not in self.subscriptions:
            return False
        refs = self.subscriptions[old].link_for(channel).release(channel)
        self.route[channel] = cluster
        self.subscriptions[cluster].link_for(channel).adopt(channel, refs, replay_from=version)
        return True

    async def close(self) -> None:
        for subscriptions in self.subscriptions.values():
            await subscriptions.close()
        for clue in self.clues.values():
            await clue.close()
