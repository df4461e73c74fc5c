"""EventSub over WebSocket, as Twitch serves it at eventsub.wss.twitch.tv/ws.

Sessions live on edges like IRC connections. A session hears its own control
stream (`$<session id>`) through the exchange: subscriptions created through
any edge's Helix arrive there and are added here; from then on the session's
edge also holds each subscription's channel, and every event of it that is an
EventSub event of the subscribed type becomes a notification. Notifications
come in the channel's one order, with a message id derived from the event,
the type and the subscription, so a client that sees one twice (after a
reconnect) can tell.

The session protocol: `session_welcome`, `session_keepalive` when nothing else
was sent for `keepalive_timeout_seconds`, `notification`, `revocation`, and
`session_reconnect` when this edge drains; close codes 4001 (the client sent
something), 4002 (no pong), 4003 (no subscription within 10 s), 4004 (did not
reconnect in time), 4007 (invalid reconnect URL).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable
from typing import Protocol

import structlog
from aiohttp import WSMsgType, web

from common import wire
from common.tasks import cancel_and_wait
from common.twitch import rfc3339
from common.wire import Event, Handover, Position, SessionSubscriptions, Subscription

log = structlog.get_logger()

KEEPALIVE_DEFAULT, KEEPALIVE_RANGE = 10, (10, 600)
FIRST_SUBSCRIPTION = 10.0  # s after the welcome a session must hold a subscription by
PING_INTERVAL = 10.0  # the edge pings; a pong must come within the next interval
RECONNECT_GRACE = 30.0  # after session_reconnect, the old connection is closed (4004)
# A listener that starts here (a new subscription, a session taken over from a
# draining edge) is first given what its channel said since the subscription was
# made, at most this long ago: its 202 or the old connection's last notification
# may have come before this edge heard the channel.
CATCH_UP_MS = 2_000
# A session handed over by a draining edge is replayed from where that edge stopped, looked for
# this far before the handover (what it had not delivered yet may have been ordered earlier).
HANDOVER_SLACK_MS = 5_000
MAX_OUTBOX = 10_000  # notifications waiting for one session: more, and it is closed (4006)
CONTROL_PREFIX = "$"
_NAMESPACE = uuid.UUID("6f0f6e6f-2b2c-4f3b-9d7e-8f7f8b7a6c51")

CLOSE_INBOUND, CLOSE_PING, CLOSE_UNUSED, CLOSE_GRACE, CLOSE_NETWORK, CLOSE_BAD_RECONNECT = (
    4001, 4002, 4003, 4004, 4006, 4007)


class Host(Protocol):
    """What sessions need from the edge: streams, clue, and the edge's public address."""

    public_ws_url: str
    internal_token: str

    def hold(self, channel: str) -> Awaitable[None]: ...
    def release(self, channel: str) -> None: ...
    def position(self, channel: str) -> Position | None: ...
    def recent(self, channel: str, seconds: float) -> Awaitable[list[Event]]: ...
    def session_call(self, op: str, session_id: str, owner: str, handover: Handover | None = None
                     ) -> Awaitable[SessionSubscriptions]: ...


def _now() -> str:
    return rfc3339(time.time())


def _message(kind: str, payload: dict, **metadata: str) -> dict:
    return {"metadata": {"message_id": str(uuid.uuid4()), "message_type": kind, "message_timestamp": _now(),
                         **metadata}, "payload": payload}


class Listener:
    """One subscription held by one session here."""

    __slots__ = ("held", "session", "shown", "sub")

    def __init__(self, session: Session, sub: Subscription) -> None:
        self.session = session
        self.sub = sub
        self.held: list[Event] | None = None  # live events held while it catches up
        # The subscription as notifications show it: encoded once.
        self.shown = wire.encode({"id": sub.id, "status": "enabled", "type": sub.type, "version": sub.version,
                                  "condition": sub.condition, "transport": sub.transport,
                                  "created_at": sub.created_at, "cost": 0})

    def wants(self, channel: str) -> bool:
        return self.sub.shards <= 1 or zlib.crc32(channel.encode()) % self.sub.shards == self.sub.shard


class Session:
    def __init__(self, session_id: str, ws: web.WebSocketResponse, keepalive: int) -> None:
        self.id = session_id
        self.ws = ws
        self.keepalive = keepalive
        self.connected_at = time.time()
        self.welcomed_at = 0.0
        self.listeners: dict[str, Listener] = {}
        self.outbox: deque[str] = deque()
        self.wakeup = asyncio.Event()
        self.last_sent = time.monotonic()
        self.last_pong = time.monotonic()
        self.reconnect_sent = 0.0
        # Handing over (draining): notifications set aside while clue records where delivery
        # stopped; once it has, `handed_over` and this connection delivers nothing more.
        self.setting_aside: list[tuple[Listener, Event]] | None = None
        self.handed_over = False
        self.ever_subscribed = False
        self.closing: int | None = None
        self.owner = secrets.token_hex(8)  # this connection, as clue knows who holds the session

    def send(self, text: str) -> None:
        if self.closing is not None:
            return
        if len(self.outbox) >= MAX_OUTBOX:
            self.close(CLOSE_NETWORK)
            return
        self.outbox.append(text)
        self.wakeup.set()

    def send_message(self, kind: str, payload: dict, **metadata: str) -> None:
        self.send(wire.encode(_message(kind, payload, **metadata)).decode())

    def close(self, code: int) -> None:
        if self.closing is None:
            self.closing = code
            self.wakeup.set()


class EventSubHub:
    def __init__(self, host: Host, secret: str) -> None:
        self.host = host
        self._secret = secret.encode()
        self.sessions: dict[str, Session] = {}
        self._by_channel: dict[str, set[Listener]] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self.draining = False
        self._emptied = asyncio.Event()  # set when the last session is forgotten (a drain waits on it)

    def start(self) -> None:
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def stop(self) -> None:
        await cancel_and_wait(self._maintenance)

    # ---- reconnect URLs
    def _sign(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()[:32]

    def reconnect_url(self, session_id: str) -> str:
        return f"{self.host.public_ws_url}/ws?reconnect={session_id}.{self._sign(session_id)}"

    # ---- the WebSocket endpoint
    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            keepalive = int(request.query.get("keepalive_timeout_seconds", KEEPALIVE_DEFAULT))
        except ValueError:
            keepalive = 0
        if not KEEPALIVE_RANGE[0] <= keepalive <= KEEPALIVE_RANGE[1]:
            return web.json_response({"error": "Bad Request", "status": 400,
                                      "message": "keepalive_timeout_seconds must be from 10 through 600"}, status=400)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=64 * 1024)
        await ws.prepare(request)
        reconnect = request.query.get("reconnect")
        session_id = self._resume_id(reconnect) if reconnect else secrets.token_urlsafe(21)
        if session_id is None:
            await ws.close(code=CLOSE_BAD_RECONNECT, message=b"invalid reconnect")
            return ws
        session = Session(session_id, ws, keepalive)
        writer = asyncio.get_running_loop().create_task(self._write(session))
        try:
            if not await self._open(session, resumed=reconnect is not None):
                session.close(CLOSE_BAD_RECONNECT if reconnect else 4000)
            else:
                await self._read(session)
        finally:
            # Shielded: however the handler ends (the client went away, the edge stops), the
            # session is forgotten here and at clue.
            await asyncio.shield(self._end(session, writer))
        return ws

    async def _end(self, session: Session, writer: asyncio.Task[None]) -> None:
        session.close(session.closing or 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(writer), 5)
        await self._forget(session)

    def _resume_id(self, token: str) -> str | None:
        session_id, _, signature = token.rpartition(".")
        if not session_id or not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        return session_id

    async def _open(self, session: Session, resumed: bool) -> bool:
        """Register the session (or take it over), hear its control stream, welcome it."""
        try:
            answer = await self.host.session_call("take" if resumed else "open", session.id, session.owner)
        except Exception:  # noqa: BLE001 -- clue unreachable or no such session: the client is told by the close
            log.warning("eventsub_open_failed", session=session.id, resumed=resumed)
            return False
        self.sessions[session.id] = session
        await self.host.hold(CONTROL_PREFIX + session.id)
        session.send_message("session_welcome", {"session": {
            "id": session.id, "status": "connected", "connected_at": rfc3339(session.connected_at),
            "keepalive_timeout_seconds": session.keepalive, "reconnect_url": None, "recovery_url": None}})
        session.welcomed_at = time.monotonic()
        for sub in answer.subscriptions:  # a session taken over: its subscriptions go on here
            await self._add(session, sub, answer.handover)
        if self.draining:  # it came on a connection opened before the drain: on it goes, elsewhere
            await self._reconnect(session)
        log.info("eventsub_session", session=session.id, resumed=resumed, subscriptions=len(answer.subscriptions),
                 handover=answer.handover is not None)
        return True

    async def _read(self, session: Session) -> None:
        async for message in session.ws:
            if message.type == WSMsgType.PING:
                await session.ws.pong(message.data)
            elif message.type == WSMsgType.PONG:
                session.last_pong = time.monotonic()
            elif message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                session.close(CLOSE_INBOUND)  # Twitch allows no inbound traffic but pongs
                return
            if session.closing is not None:
                return

    async def _write(self, session: Session) -> None:
        """One writer per session: notifications go out in order."""
        ws = session.ws
        while True:
            while session.outbox and not ws.closed:
                try:
                    await ws.send_frame(session.outbox.popleft().encode(), WSMsgType.TEXT)
                except (ConnectionError, RuntimeError):
                    session.closing = session.closing or CLOSE_NETWORK
                    break
                session.last_sent = time.monotonic()
            if session.closing is not None or ws.closed:
                if not ws.closed:
                    await ws.close(code=session.closing or 1000)
                return
            session.wakeup.clear()
            await session.wakeup.wait()

    async def _forget(self, session: Session) -> None:
        if self.sessions.get(session.id) is not session:
            return
        del self.sessions[session.id]
        if not self.sessions:
            self._emptied.set()
        for listener in list(session.listeners.values()):
            self._remove(listener)
        self.host.release(CONTROL_PREFIX + session.id)
        try:  # a no-op if the client reconnected elsewhere and that connection holds it now
            await self.host.session_call("close", session.id, session.owner)
        except Exception:  # noqa: BLE001 -- an unreachable clue: the subscriptions stay until the next take or close
            log.warning("eventsub_close_failed", session=session.id)

    # ---- subscriptions, from the control stream
    async def _add(self, session: Session, sub: Subscription, handover: Handover | None = None) -> None:
        if sub.id in session.listeners:
            return
        listener = Listener(session, sub)
        listener.held = []
        session.listeners[sub.id] = listener
        session.ever_subscribed = True
        first = sub.channel not in self._by_channel
        self._by_channel.setdefault(sub.channel, set()).add(listener)
        if first:
            await self.host.hold(sub.channel)
        await self._catch_up(listener, handover)

    async def _catch_up(self, listener: Listener, handover: Handover | None) -> None:
        """What the channel said since the subscription was made (at most
        CATCH_UP_MS ago) that reached this edge before the listener did, then
        what was held meanwhile: nothing said after a 202 is missed. A session
        taken over from a draining edge goes on from where that edge stopped."""
        channel = listener.sub.channel
        now_ms = int(time.time() * 1000)
        since = max(listener.sub.created_ms, now_ms - CATCH_UP_MS)
        after = None  # the last event the draining edge delivered
        fetch_ms = since
        if handover is not None:
            since = max(listener.sub.created_ms, min(since, handover.parked_ms - CATCH_UP_MS))
            after = handover.positions.get(channel)
            # What came after `after` may have been ordered a while before the park (that edge lagged).
            fetch_ms = max(listener.sub.created_ms, handover.parked_ms - HANDOVER_SLACK_MS) if after else since
        recent = await self.host.recent(channel, (now_ms - min(since, fetch_ms)) / 1000 + 0.5)
        # Events this edge has not delivered yet arrive live: only those up to here are replayed.
        position = self.host.position(channel)
        if after is not None and (position is None or after.boot != position.boot):
            after = None  # another exchange boot: its numbers say nothing here, the time does
        floor = listener.sub.created_ms if after is not None else since  # the oldest event worth replaying

        def delivered_before(event: Event) -> bool:
            return after is not None and (event.gen, event.seq) <= (after.gen, after.seq)

        replayed: set[tuple[int, int]] = set()
        held, listener.held = listener.held or [], None
        for event in recent:
            if position is not None and event.sent_ms >= floor and (event.gen, event.seq) <= (position.gen, position.seq):
                replayed.add((event.gen, event.seq))
                if not delivered_before(event):
                    self._notify_listener(listener, event)
        for event in held:
            if (event.gen, event.seq) not in replayed and not delivered_before(event):
                self._notify_listener(listener, event)

    def _remove(self, listener: Listener) -> None:
        listener.session.listeners.pop(listener.sub.id, None)
        listeners = self._by_channel.get(listener.sub.channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._by_channel[listener.sub.channel]
            self.host.release(listener.sub.channel)

    async def control(self, event: Event) -> None:
        session = self.sessions.get(event.channel[len(CONTROL_PREFIX):])
        control = event.control
        if session is None or control is None:
            return
        sub = control.subscription
        if control.op == "shard":
            session.ever_subscribed = True  # a conduit's shard is in use even while the conduit has no subscriptions
        elif sub is None:
            return
        elif control.op == "add":
            await self._add(session, sub)
        elif control.op in ("remove", "revoke"):
            listener = session.listeners.get(sub.id)
            if listener is not None:
                self._remove(listener)
            if control.op == "revoke":
                shown = wire.decode(Listener(session, sub).shown, dict) | {"status": control.status}
                session.send_message("revocation", {"subscription": shown}, subscription_type=sub.type,
                                     subscription_version=sub.version)

    # ---- notifications
    def deliver(self, events: list[Event]) -> None:
        for event in events:
            if event.notify and event.channel in self._by_channel:
                self._notify(event)

    def _notify(self, event: Event) -> None:
        for listener in list(self._by_channel.get(event.channel, ())):
            if listener.held is not None:
                listener.held.append(event)
            else:
                self._notify_listener(listener, event)

    def _notify_listener(self, listener: Listener, event: Event) -> None:
        if not listener.wants(event.channel):
            return
        session = listener.session
        if session.setting_aside is not None:
            session.setting_aside.append((listener, event))
            return
        if session.handed_over:
            return
        sub = listener.sub
        for notify in event.notify:
            if notify.type != sub.type:
                continue
            message_id = uuid.uuid5(_NAMESPACE, f"{sub.id}/{event.channel}/{event.gen}/{event.seq}/{notify.type}/"
                                                f"{event.id}/{event.sent_ms}")
            metadata = wire.encode({"message_id": str(message_id), "message_type": "notification",
                                    "message_timestamp": _now(), "subscription_type": sub.type,
                                    "subscription_version": sub.version})
            listener.session.send((b'{"metadata":' + metadata + b',"payload":{"subscription":' + listener.shown +
                                   b',"event":' + bytes(notify.event) + b"}}").decode())

    # ---- upkeep and draining
    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.closing is not None:
                    continue
                if session.reconnect_sent and now - session.reconnect_sent > RECONNECT_GRACE:
                    session.close(CLOSE_GRACE)
                elif not session.ever_subscribed and session.welcomed_at and \
                        now - session.welcomed_at > FIRST_SUBSCRIPTION:
                    session.close(CLOSE_UNUSED)
                elif now - session.last_pong > 2 * PING_INTERVAL:
                    session.close(CLOSE_PING)
                elif now - session.last_sent >= session.keepalive:
                    session.send_message("session_keepalive", {})
                if int(now) % int(PING_INTERVAL) == 0 and not session.ws.closed:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await session.ws.ping()

    async def _reconnect(self, session: Session) -> None:
        """Hand the session over, then tell the client where to reconnect. Delivery stops here,
        where clue records it stopped, so the edge that takes the session over goes on from
        there: a client sees each notification once. If clue cannot record it, this connection
        keeps delivering and the next edge replays the channels' last moments (at least once)."""
        if session.reconnect_sent or session.setting_aside is not None:
            return  # told already (a session opened as the drain began is met twice)
        channels = {listener.sub.channel for listener in session.listeners.values()}
        # A channel a listener is still catching up on is caught up by time on the next edge.
        channels -= {listener.sub.channel for listener in session.listeners.values() if listener.held is not None}
        positions = {channel: position for channel in channels if (position := self.host.position(channel))}
        handover = Handover(int(time.time() * 1000), positions)
        session.setting_aside = []
        try:
            await self.host.session_call("park", session.id, session.owner, handover)
            session.handed_over = True
        except Exception:  # noqa: BLE001 -- clue unreachable, or the session moved on already
            log.info("eventsub_handover_failed", session=session.id)
        set_aside, session.setting_aside = session.setting_aside, None
        for listener, event in set_aside:
            self._notify_listener(listener, event)  # dropped if handed over: the next edge delivers them
        self._send_reconnect(session)

    def _send_reconnect(self, session: Session) -> None:
        session.reconnect_sent = time.monotonic()
        session.send_message("session_reconnect", {"session": {
            "id": session.id, "status": "reconnecting", "keepalive_timeout_seconds": None,
            "reconnect_url": self.reconnect_url(session.id), "connected_at": rfc3339(session.connected_at)}})

    async def drain(self, timeout: float) -> None:
        """This edge is going away: tell every session where to reconnect, and wait a while for them to go.
        A session that still arrives here meanwhile is told the same at once."""
        self.draining = True
        await asyncio.gather(*(self._reconnect(session) for session in list(self.sessions.values())))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sessions and (left := deadline - loop.time()) > 0:  # a session may still arrive
            self._emptied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._emptied.wait(), left)
        for session in list(self.sessions.values()):
            session.close(CLOSE_GRACE)
