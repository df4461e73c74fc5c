"""The edge service: client listeners, the local hub, and the delivery endpoint."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
import uuid
from collections import Counter
from typing import Any

import structlog
from aiohttp import web

from common import twitch, wire
from common.internal_http import (
    InternalServer,
    RemoteError,
    metrics_route,
    read_body,
    reply,
    url_host,
)
from common.irc import LineTooLong
from common.metrics import Metrics
from common.tasks import cancel_and_wait
from common.wire import (
    DeliverBatch,
    DeliverReply,
    Event,
    EventRange,
    Handover,
    HistoryReply,
    HistoryRequest,
    Outcome,
    Position,
    PresenceBatch,
    RangeRequest,
    RecentRequest,
    SessionRequest,
    SessionSubscriptions,
    Submission,
)
from common.wire import TailRequest as Tail
from edge import delivery, ircv3
from edge.config import EdgeSettings
from edge.connections import ClientConnection, WebSocketConnection
from edge.console import Console
from edge.eventsub import EventSubHub
from edge.hub import Hub
from edge.ircv3 import ChatHistory
from edge.ordering import Heal, Ordering
from edge.presence import PresenceTracker
from edge.public import public_app
from edge.session import (
    Action,
    Authenticate,
    Close,
    JoinChannel,
    PartChannel,
    Publish,
    Reply,
)
from edge.subscriptions import ExchangeLink
from edge.upstream import Clusters
from web import CHAT_PAGE, PAGE_HEADERS

log = structlog.get_logger()

# 500 characters of any script (up to 4 UTF-8 bytes each) plus the command must fit.
MAX_MESSAGE_BYTES = 2048
# How long a JOIN waits for the exchange to confirm the subscription before
# answering anyway; the heartbeat re-sync then catches up.
SUBSCRIBE_WAIT = 2.0
PRESENCE_CHUNK = 5_000  # presence changes per request to clue


class EdgeService:
    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, settings: EdgeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        if settings.worker is not None:  # one of several edges behind the same ports (edge/workers.py)
            metrics.scope_gauges(f"w{settings.worker}")
            structlog.contextvars.bind_contextvars(worker=settings.edge_id)
        self.server_name = settings.common.server_name
        self.max_channels = settings.max_channels
        self.send_buffer = settings.send_buffer
        self.trusted_proxies = settings.trusted_proxies
        self.join_limit = settings.join_limit
        self.hub = Hub()
        self.ordering = Ordering()
        self.conns: dict[int, ClientConnection] = {}  # every connection, registered or not
        self._per_ip: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._history_batches = 0  # batch ids for CHATHISTORY answers
        self.presence = PresenceTracker()
        self._servers: list[asyncio.AbstractServer] = []
        self.server = InternalServer(
            settings.common.internal_token,
            [web.post("/v1/deliver", self._on_deliver), web.get("/health", self._on_health),
             metrics_route(metrics)],
        )
        self.clusters: Clusters | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.addresses: dict[str, str] = {}
        self.internal_token = settings.common.internal_token
        self.public_ws_url = settings.public_url
        self.eventsub = EventSubHub(self, settings.common.internal_token)
        self._controls: asyncio.Queue[Event] = asyncio.Queue()
        self.console = Console(settings.console_token, metrics, settings.common.internal_token, settings.edge_id,
                               settings.clue_urls, settings.exchange_urls) if settings.console_token else None
        self._public = web.AppRunner(public_app(self._forward, self.eventsub.handle, self._index,
                                                self.console.routes() if self.console else []), access_log=None)
        metrics.gauge_from("connections", lambda: len(self.conns))
        metrics.gauge_from("channels", lambda: len(self.hub))
        for kind in ("tcp", "ws"):
            metrics.gauge_from(f"connections.{kind}", lambda kind=kind: self.open_connections(kind))
        metrics.gauge_from("eventsub.sessions", lambda: len(self.eventsub.sessions))

    # ---- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        bound_url = await self.server.start(self.settings.http_listen)
        edge_url = self.settings.advertised_url or bound_url
        self.addresses["http"] = edge_url
        if self.console is not None:
            self.console.edge_url = edge_url
            self.console.health = self.health

        self.clusters = Clusters(
            self.settings.clue_urls, self.settings.exchange_urls, edge_url, self.settings.common.internal_token,
            self.metrics, self.settings.common.http_timeout, self,
        )
        self.clusters.start()
        self._keepalive = loop.create_task(self._keep_alive())
        await self._public.setup()
        self.eventsub.start()
        self._spawn(self._apply_controls())
        self._presence_task = loop.create_task(self._send_presence())

        proxy = self.settings.proxy_protocol
        listeners = [
            ("irc", self.settings.irc_listen, lambda: ClientConnection(self, proxy), None),
            ("ws", self.settings.ws_listen, lambda: WebSocketConnection(self, proxy), None),
        ]
        if self.settings.tls_cert and self.settings.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            listeners += [
                ("ircs", self.settings.irc_tls_listen, lambda: ClientConnection(self), tls),
                ("wss", self.settings.wss_listen, lambda: WebSocketConnection(self), tls),
            ]
        # A worker shares its ports with the others: the kernel spreads new connections over them.
        shared = self.settings.worker is not None
        for kind, (host, port), factory, context in listeners:
            # "localhost": IPv4 and, where the machine has it, IPv6 (Node resolves localhost to ::1 first).
            server = await loop.create_server(factory, "127.0.0.1" if host == "localhost" else host, port,
                                              backlog=4096, reuse_address=True, reuse_port=shared, ssl=context)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
            self.addresses[kind] = f"{kind}://{url_host(host)}:{bound[1]}"
            if host == "localhost":
                with contextlib.suppress(OSError):
                    self._servers.append(await loop.create_server(factory, "::1", bound[1], backlog=4096,
                                                                  reuse_address=True, reuse_port=shared,
                                                                  ssl=context))
        if not self.public_ws_url:
            self.public_ws_url = self.addresses["ws"]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        await cancel_and_wait(self._keepalive)
        # EventSub sessions are told where to reconnect, and given a while to.
        await self.eventsub.drain(self.settings.drain_timeout)
        await self.eventsub.stop()
        # Tell clients to reconnect (to another edge) before the socket closes;
        # closing a transport still sends what is buffered.
        reconnect = f":{self.server_name} RECONNECT\r\n".encode()
        for conn in list(self.conns.values()):
            conn.write(reconnect)
            conn.close()
        await cancel_and_wait(self._presence_task)
        self.presence.leave_all()
        await self._flush_presence()
        for task in list(self._tasks):
            task.cancel()
        if self.clusters is not None:
            await self.clusters.close()
        await self._public.cleanup()
        if self.console is not None:
            await self.console.close()
        await self.server.stop()

    # ---- connections (edge.connections.ConnectionHost)
    def next_conn_id(self) -> int:
        return next(self._ids)

    def connection_made(self, conn: ClientConnection) -> None:
        self.conns[conn.conn_id] = conn

    def admit(self, conn: ClientConnection) -> str | None:
        """Count the connection against its (real) address; or why it is turned away."""
        limit = self.settings.max_per_ip
        if limit and self._per_ip[conn.peer] >= limit:
            self.metrics.incr("connections.refused_per_ip")
            log.info("connection_refused", reason="too many connections from the address", peer=conn.peer,
                     limit=limit)
            return "Too many connections from your address"
        self._per_ip[conn.peer] += 1
        return None

    def connection_opened(self, conn: ClientConnection) -> None:
        self.metrics.incr(f"connections.opened.{conn.kind}")

    def open_connections(self, kind: str) -> int:
        """Connections of one transport open for chat (a gauge: counted once a second, not kept up to date)."""
        return sum(1 for conn in self.conns.values() if conn.open and conn.kind == kind)

    def hand_off(self, conn: ClientConnection, data: bytes) -> None:
        """A request on the WebSocket port that is not IRC: the public HTTP app serves it."""
        transport = conn.transport
        self.connection_closed(conn)
        if transport is None or transport.is_closing() or self._public.server is None:
            return
        protocol = self._public.server()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def connection_closed(self, conn: ClientConnection) -> None:
        if self.conns.pop(conn.conn_id, None) is None:
            return
        if conn.admitted:
            conn.admitted = False
            self._per_ip[conn.peer] -= 1
            if not self._per_ip[conn.peer]:
                del self._per_ip[conn.peer]
        self.metrics.incr(f"connections.closed.{conn.kind}")
        for channel in conn.session.channels:
            self._leave(conn, channel)
        conn.session.channels.clear()
        if conn.session.identity is not None:
            self._leave(conn, twitch.whisper_inbox(conn.session.identity.login))

    async def _keep_alive(self) -> None:
        """Close connections that never finish their handshake or registration,
        PING silent clients, close those that stay silent."""
        settings = self.settings
        interval = settings.ping_interval
        ping = f"PING :{self.server_name}\r\n".encode()
        while True:
            await asyncio.sleep(min(interval, settings.registration_timeout, settings.handshake_timeout) / 2)
            now = time.monotonic()
            for conn in list(self.conns.values()):
                age = now - conn.opened_at
                if not conn.open and age > settings.handshake_timeout:
                    self.metrics.incr("connections.handshake_timeout")
                    log.info("connection_closed", reason="handshake timeout", peer=conn.peer)
                    conn.abort()
                elif not conn.session.registered and age > settings.registration_timeout:
                    self.metrics.incr("connections.registration_timeout")
                    self.execute(conn, conn.session.disconnect("Registration timed out"))
                elif now - conn.last_input > 2 * interval:
                    self.metrics.incr("connections.ping_timeout")
                    self.execute(conn, conn.session.disconnect("Ping timeout"))
                elif now - conn.last_input > interval:
                    conn.write(ping)

    def slow_consumer(self, conn: ClientConnection) -> None:
        """A client that stopped reading: its send buffer is full, so it is cut off
        (it cannot be told why: nothing more reaches it) and logged with the reason."""
        self.metrics.incr("connections.slow_consumer")
        log.warning("disconnected", reason="send buffer full", conn=conn.conn_id, peer=conn.peer,
                    limit=self.send_buffer)
        conn.abort()

    def handle_input(self, conn: ClientConnection, items: list[str | LineTooLong]) -> None:
        actions: list[Action] = []
        for item in items:
            actions.extend(conn.session.receive(item))
        self.metrics.incr("lines.received", len(items))
        self.execute(conn, actions)

    def execute(self, conn: ClientConnection, actions: list[Action]) -> None:
        """Carry out a session's actions; replies are written in one go."""
        lines: list[str] = []
        for action in actions:
            if isinstance(action, Reply):
                lines.append(action.line)
            elif isinstance(action, Publish):
                self._publish(conn, action)
            elif isinstance(action, JoinChannel):
                self._spawn(self._join(conn, action.channel))
            elif isinstance(action, PartChannel):
                self._leave(conn, action.channel)
            elif isinstance(action, Authenticate):
                self._spawn(self._login(conn, action.token))
            elif isinstance(action, ChatHistory):
                self._spawn(self._chathistory(conn, action))
            elif isinstance(action, Close):
                self._write_lines(conn, lines)
                lines = []
                conn.close()
                break
        self._write_lines(conn, lines)

    def _write_lines(self, conn: ClientConnection, lines: list[str]) -> None:
        if lines:
            conn.write(("\r\n".join(lines) + "\r\n").encode())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- login, join, part
    async def _login(self, conn: ClientConnection, token: str) -> None:
        assert self.clusters is not None
        try:
            identity = await self.clusters.main.login(token)
        except RemoteError:
            self.metrics.incr("logins.unavailable")
            self.execute(conn, conn.session.login_failed())
            return
        if identity is None:
            self.metrics.incr("logins.failed")
            self.execute(conn, conn.session.login_failed())
            return
        self.metrics.incr("logins.ok")
        # Every logged-in connection listens for whispers on its user's pseudo-channel.
        inbox = twitch.whisper_inbox(identity.login)
        await self._subscribe(inbox, self.clusters.whisper_cluster())
        if not conn.open:
            self.clusters.unsubscribe(inbox)
            return
        self.hub.add(conn, inbox)
        self.execute(conn, conn.session.login_succeeded(identity))

    async def _join(self, conn: ClientConnection, channel: str) -> None:
        clusters = self.clusters
        assert clusters is not None
        identity = conn.session.identity
        try:
            state = await clusters.main.join(channel, identity, names=conn.session.wants_membership)
        except RemoteError:
            self.execute(conn, conn.session.join_failed(channel, "msg_join_failed"))
            return
        if not state.ok:
            self.execute(conn, conn.session.join_failed(channel, state.msg_id or "msg_join_failed"))
            return
        await self._subscribe(channel, state.cluster)
        if not conn.open or not conn.session.is_joining(channel):
            clusters.unsubscribe(channel)
            return
        # No await between the JOIN echo and joining the hub: nothing can slip between.
        self.execute(conn, conn.session.join_succeeded(channel, state.room_state, state.user_state, state.names))
        self.hub.add(conn, channel)
        if identity is not None:
            self.presence.joined(channel, identity)
        self.metrics.incr("joins")

    async def _subscribe(self, channel: str, cluster: str) -> None:
        """Count a local user of `channel` and wait (a bounded while) until the
        exchange confirms; if it does not, the heartbeat re-sync catches up."""
        assert self.clusters is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.clusters.subscribe(channel, cluster)), SUBSCRIBE_WAIT)
        except (TimeoutError, RemoteError):
            log.warning("subscribe_pending", remote="exchange", channel=channel)

    def _leave(self, conn: ClientConnection, channel: str) -> None:
        members = self.hub.members(channel)
        if not members or conn not in members:
            return
        self.hub.remove(conn, channel)
        identity = conn.session.identity
        if identity is not None and not channel.startswith(twitch.WHISPER_PREFIX):
            self.presence.left(channel, identity.login)
        assert self.clusters is not None
        self.clusters.unsubscribe(channel)

    # ---- presence
    async def _send_presence(self) -> None:
        """Joins and leaves go to clue once per interval; members still here, now and then."""
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.presence_interval)
            await self._flush_presence()
            if time.monotonic() - refreshed >= self.settings.presence_refresh:
                refreshed = time.monotonic()
                members = self.presence.members()
                for start in range(0, len(members), PRESENCE_CHUNK):
                    with contextlib.suppress(RemoteError):  # the next refresh re-asserts them
                        await self._post_presence(PresenceBatch(members[start:start + PRESENCE_CHUNK], refresh=True))

    async def _flush_presence(self) -> None:
        changes = self.presence.take()
        for start in range(0, len(changes), PRESENCE_CHUNK):
            chunk = changes[start:start + PRESENCE_CHUNK]
            try:
                await self._post_presence(PresenceBatch(chunk))
            except RemoteError:
                self.presence.give_back(changes[start:])  # sent with the next tick's
                self.metrics.incr("presence.deferred", len(changes) - start)
                return

    async def _post_presence(self, batch: PresenceBatch) -> None:
        assert self.clusters is not None
        await self.clusters.main.call(self.settings.edge_id, "/v1/presence", batch, op="presence", answer=dict)

    # ---- IRCv3 chathistory
    async def _chathistory(self, conn: ClientConnection, request: ChatHistory) -> None:
        """A CHATHISTORY request: the channel's history from clue, in a batch."""
        self._history_batches += 1
        batch_id = f"h{self._history_batches}"
        session = conn.session
        try:
            if request.subcommand == "TARGETS":
                actions = session.targets_ready(await self._history_targets(request, session.channels), batch_id)
            else:
                answer = await self._history(HistoryRequest(request.channel, request.subcommand,
                                                            request.references, request.limit))
                actions = session.history_ready(request, answer.entries, batch_id)
        except RemoteError as exc:
            if exc.status == 400:  # a msgid the history no longer holds, a bad timestamp
                actions = session.history_failed(request, "no such message in the history", "INVALID_PARAMS")
            else:
                actions = session.history_failed(request, "history is unavailable right now")
        if conn.open:
            self.execute(conn, actions)

    async def _history(self, request: HistoryRequest) -> HistoryReply:
        assert self.clusters is not None
        return await self.clusters.main.call(request.channel, "/v1/history", request, op="history",
                                             answer=HistoryReply)

    async def _history_targets(self, request: ChatHistory, channels: set[str]) -> list[tuple[str, int]]:
        """Which of these channels last spoke between the request's two times, and when."""
        bounds = sorted(ircv3.timestamp_ms(reference) or 0 for reference in request.references)
        answers = await asyncio.gather(*(self._history(HistoryRequest(channel, "LATEST", ["*"], 1))
                                         for channel in sorted(channels)[:ircv3.MAX_HISTORY * 10]))
        found = [(channel, answer.entries[-1].sent_ms) for channel, answer in zip(sorted(channels), answers)
                 if answer.entries and bounds[0] <= answer.entries[-1].sent_ms <= bounds[1]]
        return sorted(found, key=lambda item: item[1])[-request.limit:] if request.limit else []

    # ---- chat
    def _publish(self, conn: ClientConnection, action: Publish) -> None:
        identity = conn.session.identity
        assert identity is not None and self.clusters is not None
        started = time.perf_counter()
        self.metrics.incr("messages.received")
        submission = Submission(id=str(uuid.uuid4()), channel=action.channel, text=action.text, identity=identity,
                                origin=f"{self.settings.edge_id}/{conn.conn_id}", client_tags=action.client_tags)
        # Chat may be sent again when its fate is unknown; a command (a ban, a whisper) may not.
        chat = not twitch.is_command(action.text) or twitch.is_action(action.text)
        future = self.clusters.clue_for(action.channel).submit(submission, retry=chat)
        conn.inflight += 1
        if conn.inflight >= self.settings.max_inflight:
            conn.pause(True)

        def done(future: asyncio.Future[Outcome]) -> None:
            self.metrics.timing("publish", (time.perf_counter() - started) * 1000)
            conn.inflight -= 1
            if conn.paused and conn.inflight <= self.settings.max_inflight // 2:
                conn.pause(False)
            if future.cancelled() or not conn.open:
                return
            outcome = future.result()
            if outcome.ok and chat:
                self.metrics.incr("messages.accepted")
                user_state = outcome.user_state or fallback_user_state(identity, submission.id)
                self.execute(conn, conn.session.publish_accepted(action.channel, user_state))
            elif outcome.msg_id:
                # A refusal, or a command's answer (ban_success, room_mods, ...).
                if not outcome.ok:
                    self.metrics.incr(f"messages.rejected.{outcome.msg_id}")
                self.execute(conn, conn.session.notice(action.channel, outcome.msg_id, outcome.text))

        future.add_done_callback(done)

    # ---- from the exchange
    async def _on_deliver(self, request: web.Request) -> web.Response:
        batch = await read_body(request, DeliverBatch)
        ready, heals = self.ordering.receive(batch.boot, batch.events)
        delivered = self._deliver(ready)
        for heal in heals:
            self._spawn(self._heal(heal))
        assert self.clusters is not None
        for move in batch.moves:  # after the events ordered before it
            if self.clusters.move(move.channel, move.cluster, move.version):
                self.metrics.incr("channels.moved")
                log.info("channel_moved", channel=move.channel, cluster=move.cluster)
        return reply(DeliverReply(delivered))

    def _deliver(self, events: list[Event]) -> int:
        if not events:
            return 0
        with self.metrics.timer("fanout"):
            delivered, writes = delivery.deliver(self.hub, self.settings.edge_id, events, self._count_channel)
        self.metrics.incr("fanout.writes", writes)
        self.eventsub.deliver(events)
        now_ms = time.time() * 1000
        for event in events:
            if event.control is not None:
                self._controls.put_nowait(event)
            elif event.command == "PRIVMSG" and event.sent_ms:
                # tmi-sent-ts (clue accepted it) → written to this edge's clients: the console's end-to-end time.
                self.metrics.timing("delivery.lag", now_ms - event.sent_ms)
        self.metrics.incr("messages.delivered", delivered)
        return delivered

    def _count_channel(self, channel: str, delivered: int) -> None:
        self.metrics.count_top("channel.out", channel, delivered)

    async def _apply_controls(self) -> None:
        """EventSub subscriptions for this edge's sessions, one at a time, in order."""
        while True:
            event = await self._controls.get()
            try:
                await self.eventsub.control(event)
            except Exception:  # a bug in one control must not stop the next
                log.exception("eventsub_control_failed", channel=event.channel)

    async def _heal(self, heal: Heal) -> None:
        """Ask the channel's exchange for the events this edge is missing."""
        assert self.clusters is not None
        link = self.clusters.link_for(heal.channel)
        request = RangeRequest(heal.channel, heal.boot, heal.gen, heal.after, heal.before)
        try:
            found = (await link.client.post("/v1/range", request, op="range", answer=EventRange)).events
        except RemoteError:
            found = []
        gaps_before, healed_before = self.ordering.gaps, self.ordering.healed
        ready, heals = self.ordering.heal_answered(heal, found)
        self._count_heal(heal.channel, self.ordering.healed - healed_before, self.ordering.gaps - gaps_before)
        self._deliver(ready)
        for more in heals:
            self._spawn(self._heal(more))

    def _count_heal(self, channel: str, healed: int, gaps: int) -> None:
        if healed:
            self.metrics.incr("sequence.healed", healed)
        if gaps:
            self.metrics.incr("sequence.gaps", gaps)
            log.warning("sequence_gap", remote="exchange", channel=channel, missing=gaps)

    # ---- edge.subscriptions.StreamKeeper
    def open(self, channel: str) -> None:
        self.ordering.open(channel)

    def expect(self, channel: str, start: Position) -> None:
        self.ordering.expect(channel, start)

    def forget(self, channel: str) -> None:
        self.ordering.forget(channel)

    def position(self, channel: str) -> Position | None:
        return self.ordering.position(channel)

    async def recover_boot(self, link: ExchangeLink, boot: str, channels: list[str]) -> None:
        """The exchange behind `link` restarted: fetch what its old boot ordered
        after what this edge delivered, from the clues that published it."""
        after = {c: p.seq for c in channels if (p := self.ordering.position(c)) is not None and p.boot == boot}
        if not after:
            return
        assert self.clusters is not None
        answers = await self.clusters.ask_every_clue("/v1/tail", Tail(link.url, boot, after), "tail", EventRange)
        by_channel: dict[str, dict[int, Event]] = {}
        for answer in answers:
            if isinstance(answer, EventRange):
                for event in answer.events:
                    by_channel.setdefault(event.channel, {})[event.seq] = event
        recovered = 0
        for channel, events in by_channel.items():
            gaps_before = self.ordering.gaps
            ready = self.ordering.recover(channel, boot, list(events.values()))
            recovered += len(ready)
            self._count_heal(channel, len(ready), self.ordering.gaps - gaps_before)
            self._deliver(ready)
        log.info("recovered_exchange_tail", remote="exchange", url=link.url, channels=len(after), events=recovered)

    # ---- edge.eventsub.Host
    async def hold(self, channel: str) -> None:
        """Hear a channel's stream for EventSub (counted like a local user)."""
        assert self.clusters is not None
        cluster = "main"
        if channel.startswith("#"):
            try:
                cluster = (await self.clusters.main.join(channel, None)).cluster
            except RemoteError:
                pass
        elif channel.startswith(twitch.WHISPER_PREFIX):
            cluster = self.clusters.whisper_cluster()
        await self._subscribe(channel, cluster)

    def release(self, channel: str) -> None:
        assert self.clusters is not None
        self.clusters.unsubscribe(channel)

    async def recent(self, channel: str, seconds: float) -> list[Event]:
        assert self.clusters is not None
        try:
            answer = await self.clusters.link_for(channel).client.post(
                "/v1/recent", RecentRequest(channel, seconds), op="recent", answer=EventRange)
        except RemoteError:
            return []
        return answer.events

    async def session_call(self, op: str, session_id: str, owner: str, handover: Handover | None = None
                           ) -> SessionSubscriptions:
        assert self.clusters is not None
        return await self.clusters.main.call(session_id, f"/v1/eventsub/{op}",
                                             SessionRequest(session_id, owner, handover), op=f"eventsub_{op}",
                                             answer=SessionSubscriptions)

    # ---- the public HTTP surface
    async def _forward(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
                       ) -> tuple[int, dict[str, str], bytes]:
        assert self.clusters is not None
        key = headers.get("Authorization", path)
        return await self.clusters.main.forward(key, method, path + ("?" + query if query else ""), headers, body)

    async def _index(self, request: web.Request) -> web.FileResponse:
        """The chat page: a browser's plain GET of `/` (IRC over WebSocket upgrades `/` before this)."""
        return web.FileResponse(CHAT_PAGE, headers=PAGE_HEADERS)

    async def _on_health(self, request: web.Request) -> web.Response:
        return reply(self.health())

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "edge_id": self.settings.edge_id,
            "connections": len(self.conns),
            "paused": sum(conn.paused for conn in self.conns.values()),
            "channels": len(self.hub),
            "sequence_gaps": self.ordering.gaps,
            "sequence_healed": self.ordering.healed,
            "duplicates_dropped": self.ordering.duplicates,
            "eventsub_sessions": len(self.eventsub.sessions),
        }


def fallback_user_state(identity: wire.Identity, message_id: str) -> dict[str, str]:
    """USERSTATE for a message settled as accepted without clue's answer."""
    return {"badge-info": "", "badges": "", "color": identity.color, "display-name": identity.display_name,
            "emote-sets": "0", "id": message_id, "mod": "0", "subscriber": "1" if identity.subscriber else "0",
            "user-type": ""}
