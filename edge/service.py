"""The edge service: client listeners, the local hub, and the delivery endpoint."""
from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from collections import Counter
from typing import Any

import structlog
from aiohttp import web

from common import twitch
from common.internal_http import InternalServer, RemoteError, json_error, url_host
from common.irc import LineTooLong
from common.metrics import Metrics
from common.tasks import cancel_and_wait
from edge import delivery
from edge.config import EdgeSettings
from edge.connections import ClientConnection, WebSocketConnection
from edge.hub import Hub
from edge.session import (
    Action,
    Authenticate,
    Close,
    JoinChannel,
    PartChannel,
    Publish,
    Reply,
)
from edge.upstream import Clusters

log = structlog.get_logger()

# 500 characters of any script (up to 4 UTF-8 bytes each) plus the command must fit.
MAX_MESSAGE_BYTES = 2048
# How long a JOIN waits for the exchange to confirm the subscription before
# answering anyway; the heartbeat re-sync then catches up.
SUBSCRIBE_WAIT = 2.0


class EdgeService:
    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, settings: EdgeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.hub = Hub()
        self.conns: dict[int, ClientConnection] = {}
        self._per_ip: Counter[str] = Counter()
        self.gaps = 0  # messages known missing from channels' sequences
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self.server = InternalServer(
            settings.common.internal_token,
            [web.post("/v1/deliver", self._on_deliver), web.get("/health", self._on_health)],
        )
        self.clusters: Clusters | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.addresses: dict[str, str] = {}
        metrics.gauge_from("connections", lambda: len(self.conns))
        metrics.gauge_from("channels", lambda: len(self.hub))

    # ---- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        bound_url = await self.server.start(self.settings.http_listen)
        edge_url = self.settings.advertised_url or bound_url
        self.addresses["http"] = edge_url

        self.clusters = Clusters(
            self.settings.clue_urls, self.settings.exchange_urls, edge_url, self.settings.common.internal_token,
            self.metrics, self.settings.common.http_timeout,
        )
        self.clusters.start()
        self._keepalive = loop.create_task(self._keep_alive())

        listeners = [
            ("irc", self.settings.irc_listen, lambda: ClientConnection(self), None),
            ("ws", self.settings.ws_listen, lambda: WebSocketConnection(self), None),
        ]
        if self.settings.tls_cert and self.settings.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
            listeners += [
                ("ircs", self.settings.irc_tls_listen, lambda: ClientConnection(self), tls),
                ("wss", self.settings.wss_listen, lambda: WebSocketConnection(self), tls),
            ]
        for kind, (host, port), factory, context in listeners:
            server = await loop.create_server(factory, host, port, backlog=4096, reuse_address=True, ssl=context)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
            self.addresses[kind] = f"{kind}://{url_host(host)}:{bound[1]}"

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        await cancel_and_wait(self._keepalive)
        # Tell clients to reconnect (to another edge) before the socket closes;
        # closing a transport still sends what is buffered.
        reconnect = f":{self.settings.common.server_name} RECONNECT\r\n".encode()
        for conn in list(self.conns.values()):
            conn.write(reconnect)
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self.clusters is not None:
            await self.clusters.close()
        await self.server.stop()

    # ---- connections
    def next_conn_id(self) -> int:
        return next(self._ids)

    def connection_opened(self, conn: ClientConnection) -> None:
        limit = self.settings.max_per_ip
        if limit and self._per_ip[conn.peer] >= limit:
            self.metrics.incr("connections.refused_per_ip")
            conn.write(f":{self.settings.common.server_name} NOTICE * :Too many connections from your address\r\n".encode())
            conn.close()
            return
        self._per_ip[conn.peer] += 1
        self.conns[conn.conn_id] = conn
        self.metrics.incr(f"connections.opened.{conn.kind}")

    def connection_closed(self, conn: ClientConnection) -> None:
        if self.conns.pop(conn.conn_id, None) is None:
            return  # refused at the door: it never counted
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
        """PING silent clients, close those that stay silent or never register."""
        interval = self.settings.ping_interval
        ping = f"PING :{self.settings.common.server_name}\r\n".encode()
        while True:
            await asyncio.sleep(min(interval, self.settings.registration_timeout) / 2)
            now = time.monotonic()
            for conn in list(self.conns.values()):
                if not conn.session.registered and now - conn.opened_at > self.settings.registration_timeout:
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
                    limit=self.settings.send_buffer)
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
        try:
            assert self.clusters is not None
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
        assert self.clusters is not None
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
        try:
            state = await clusters.main.join(channel, conn.session.identity)
        except RemoteError:
            self.execute(conn, conn.session.join_failed(channel, "msg_join_failed"))
            return
        if not state.get("ok", True):
            self.execute(conn, conn.session.join_failed(channel, state.get("msg_id", "msg_join_failed")))
            return
        await self._subscribe(channel, state.get("cluster", "main"))
        if not conn.open or channel not in conn.session.joining:
            clusters.unsubscribe(channel)
            return
        # No await between the JOIN echo and joining the hub: nothing can slip between.
        self.execute(conn, conn.session.join_succeeded(channel, state["room_state"], state["user_state"]))
        self.hub.add(conn, channel)
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
        assert self.clusters is not None
        self.clusters.unsubscribe(channel)

    # ---- chat
    def _publish(self, conn: ClientConnection, action: Publish) -> None:
        identity = conn.session.identity
        assert identity is not None
        started = time.perf_counter()
        self.metrics.incr("messages.received")
        assert self.clusters is not None
        future = self.clusters.clue_for(action.channel).publish(
            {
                "channel": action.channel,
                "text": action.text,
                "client_tags": action.client_tags,
                "identity": identity.to_dict(),
                "origin": f"{self.settings.edge_id}/{conn.conn_id}",
            }
        )

        def done(future: asyncio.Future[dict[str, Any]]) -> None:
            self.metrics.timing("publish", (time.perf_counter() - started) * 1000)
            if future.cancelled():
                return
            if future.exception() is not None:
                result = {"ok": False, "msg_id": "msg_service_unavailable"}
            else:
                result = future.result()
            if not conn.open:
                return
            if result.get("ok") and "user_state" in result:
                self.metrics.incr("messages.accepted")
                self.execute(conn, conn.session.publish_accepted(action.channel, result["user_state"]))
            elif "msg_id" in result:
                # A refusal, or a command's answer (ban_success, room_mods, ...).
                msg_id = result["msg_id"]
                if not result.get("ok"):
                    self.metrics.incr(f"messages.rejected.{msg_id}")
                self.execute(conn, conn.session.notice(action.channel, msg_id, result.get("text") or ""))

        future.add_done_callback(done)

    # ---- from the exchange
    async def _on_deliver(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            boot = str(body.get("boot", ""))
        except (ValueError, KeyError, TypeError):
            return json_error(400, "bad_request", "expected {boot, messages: [...]}")
        moves = [m for m in messages if m.get("command") == "MOVED"]
        if moves:
            messages = [m for m in messages if m.get("command") != "MOVED"]
        with self.metrics.timer("fanout"):
            delivered, gaps = delivery.deliver(self.hub, self.settings.edge_id, boot, messages)
        for move in moves:  # after the messages ordered before it
            assert self.clusters is not None
            if self.clusters.move(move["channel"], str(move["cluster"]), int(move["version"])):
                self.metrics.incr("channels.moved")
                log.info("channel_moved", channel=move["channel"], cluster=move["cluster"])
        self.metrics.incr("messages.delivered", delivered)
        if gaps:
            self.gaps += gaps
            self.metrics.incr("sequence.gaps", gaps)
            log.warning("sequence_gap", remote="exchange", missing=gaps)
        return web.json_response({"ok": True, "delivered": delivered})

    async def _on_health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "connections": len(self.conns), "channels": len(self.hub), "sequence_gaps": self.gaps}
        )

