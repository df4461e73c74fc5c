"""Locust users that speak chatd's Twitch IRC dialect over TCP and WebSocket.

Most users lurk and a few chat. Channel popularity is Zipf-like, with one
"Twitch Plays Pokémon" channel (#tpp) holding a fixed share of all users, and
some users hop from channel to channel. Every chat line carries its id and
send time, so each reception becomes a "deliver" sample, and a tracker shared
by this process's users reports messages that none of them received as "lost".

    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 20s --host ws://127.0.0.1:8080
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import gevent
import websocket
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from locust import User, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from chatd.cluster import load_or_create_secret
from common.irc import IRCParseError, Message, parse
from common.tokens import issue_token

logger = logging.getLogger("loadtest")

TPP_CHANNEL = "#tpp"
ZIPF_S = 1.1
CAPS = "twitch.tv/tags twitch.tv/commands"
TEXT_PREFIX = "lt "
CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
CHECK_INTERVAL = 0.25
# chatd allows 20 messages per user per 30 s by default. A gap of at least
# 2 s (1.7 s in #tpp) fits at most 15 (18) messages into any 30 s window.
CHAT_WAIT = (2.0, 4.0)
TPP_CHAT_WAIT = (1.7, 2.5)

Kind = Literal["IRC", "WS"]


class ChatError(Exception):
    """A failure reported to Locust; the text becomes the row in its error table."""


class ReplyTimeout(ChatError):
    pass


class ServerClosed(ChatError):
    pass


class Refused(ChatError):
    pass


class Rejected(ChatError):
    pass


class MessageLost(ChatError):
    pass


class SecretMissing(ChatError):
    pass


# ---- settings


@dataclass(frozen=True)
class Target:
    kind: Kind
    url: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme == "irc" and parts.hostname:
            return cls("IRC", url)
        if parts.scheme in ("ws", "wss") and parts.hostname:
            return cls("WS", url)
        raise ValueError(f"{url!r}: expected irc://HOST:PORT or ws://HOST:PORT")

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6667


@dataclass(frozen=True)
class Settings:
    irc: Target | None
    ws: Target | None
    transport_mix: float
    channels: tuple[str, ...]  # most popular first
    weights: tuple[float, ...]
    tpp_share: float
    loss_timeout: float
    secret: str | None
    secret_problem: str

    @classmethod
    def from_environment(cls, environment: Environment) -> Settings:
        options = environment.parsed_options

        def option(name: str, default: Any) -> Any:
            value = getattr(options, name, None)
            return default if value is None else value

        urls = (environment.host or "", option("irc_host", ""), option("ws_host", ""))
        targets = [Target.parse(url) for url in urls if url]
        irc = next((t for t in reversed(targets) if t.kind == "IRC"), None)
        ws = next((t for t in reversed(targets) if t.kind == "WS"), None)
        if irc is None and ws is None:
            raise ValueError("no server: pass --host irc://HOST:PORT or ws://HOST:PORT (or --irc-host / --ws-host)")
        mix, share = float(option("transport_mix", 0.5)), float(option("tpp_share", 0.3))
        count, loss_timeout = int(option("channels", 20)), float(option("loss_timeout", 5.0))
        if not (0 <= mix <= 1 and 0 <= share <= 1):
            raise ValueError("--transport-mix and --tpp-share are fractions between 0 and 1")
        if count < 1 or loss_timeout <= 0:
            raise ValueError("--channels must be at least 1 and --loss-timeout positive")
        data_dir = Path(option("chatd_data_dir", "") or os.environ.get("CHATD_DATA_DIR") or ".chatd")
        secret, problem = None, ""
        # load_or_create_secret would invent a new secret, whose tokens the server refuses.
        if os.environ.get("CHAT_SECRET") or (data_dir / "secret").exists():
            secret = load_or_create_secret(data_dir)
        else:
            problem = f"no token secret: set CHAT_SECRET or --chatd-data-dir (no {data_dir / 'secret'})"
        return cls(
            irc=irc,
            ws=ws,
            transport_mix=mix,
            channels=tuple(f"#lt_{rank}" for rank in range(1, count + 1)),
            weights=tuple(1 / rank**ZIPF_S for rank in range(1, count + 1)),
            tpp_share=share,
            loss_timeout=loss_timeout,
            secret=secret,
            secret_problem=problem,
        )

    def pick_channel(self, avoid: str = "") -> str:
        """A channel by popularity; a hop tries not to land where it left."""
        channel = avoid
        for _ in range(10):
            if random.random() < self.tpp_share:
                channel = TPP_CHANNEL
            else:
                channel = random.choices(self.channels, self.weights)[0]
            if channel != avoid:
                break
        return channel

    def pick_target(self, index: int) -> Target:
        """The `index`-th user of a class goes over WebSocket exactly when that
        keeps the WebSocket share at `transport_mix`, so the mix holds for few users too."""
        if self.irc is None or self.ws is None:
            target = self.irc or self.ws
            assert target is not None
            return target
        on_ws = math.floor((index + 1) * self.transport_mix) > math.floor(index * self.transport_mix)
        return self.ws if on_ws else self.irc


@events.init_command_line_parser.add_listener
def _add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument("--irc-host", default="", help="IRC over TCP target, e.g. irc://127.0.0.1:6667")
    parser.add_argument("--ws-host", default="", help="IRC over WebSocket target, e.g. ws://127.0.0.1:8080")
    parser.add_argument("--transport-mix", type=float, default=0.5,
                        help="fraction of users on WebSocket when both transports have a target")
    parser.add_argument("--channels", type=int, default=20, help="channels besides #tpp, Zipf-popular")
    parser.add_argument("--tpp-share", type=float, default=0.3, help="fraction of users who pick #tpp")
    parser.add_argument("--loss-timeout", type=float, default=5.0,
                        help="seconds after which an undelivered message counts as lost")
    parser.add_argument("--chatd-data-dir", default="",
                        help="directory holding chatd's token secret (default $CHATD_DATA_DIR or .chatd)")


# ---- delivery tracking


class Membership:
    """One user's unbroken stay in one channel, from its 366 to its PART or disconnect."""

    __slots__ = ("active", "channel", "user")

    def __init__(self, user: object, channel: str) -> None:
        self.user = user
        self.channel = channel
        self.active = True


@dataclass(slots=True)
class Outstanding:
    sender: object
    kind: Kind
    sent_at: float
    listeners: list[Membership]


class Tracker:
    """Messages sent by this process's users, awaiting a reception by another of them."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.loss_timeout = 5.0
        self._checker: gevent.Greenlet | None = None
        self._reset()

    def _reset(self) -> None:
        self.members: dict[str, set[Membership]] = {}
        self.outstanding: dict[str, Outstanding] = {}  # in send order
        self.draining = False
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)  # message ids unique across processes and runs
        self.sent = self.delivered = self.lost = self.rejected = self.unobserved = 0

    @property
    def running(self) -> bool:
        return self._checker is not None

    def start(self, environment: Environment, loss_timeout: float) -> None:
        self.stop()
        self._reset()
        self.environment, self.loss_timeout = environment, loss_timeout
        self._checker = gevent.spawn(self._check_forever)

    def stop(self) -> None:
        if self._checker is not None:
            self._checker.kill()
            self._checker = None
        # Whoever could have received these has gone: nothing can be said about them.
        self.unobserved += len(self.outstanding)
        self.outstanding.clear()

    def summary(self) -> str:
        return (f"delivered={self.delivered} lost={self.lost} rejected={self.rejected} "
                f"sent={self.sent} unobserved={self.unobserved}")

    # ---- membership
    def joined(self, user: object, channel: str) -> Membership:
        membership = Membership(user, channel)
        self.members.setdefault(channel, set()).add(membership)
        return membership

    def left(self, membership: Membership) -> None:
        membership.active = False
        self.members.get(membership.channel, set()).discard(membership)

    # ---- messages
    def new_message(self, sender: object, kind: Kind, channel: str) -> str:
        """An id for a message about to be sent, tracked if another user can see it."""
        msgid = f"{self._prefix}{next(self._ids)}"
        self.sent += 1
        listeners = [m for m in self.members.get(channel, ()) if m.user is not sender]
        if listeners:
            self.outstanding[msgid] = Outstanding(sender, kind, time.monotonic(), listeners)
        else:
            self.unobserved += 1
        return msgid

    def received(self, msgid: str, receiver: object) -> None:
        message = self.outstanding.get(msgid)
        if message is not None and message.sender is not receiver:
            del self.outstanding[msgid]
            self.delivered += 1

    def forget(self, msgid: str, rejected: bool = False) -> None:
        if self.outstanding.pop(msgid, None) is not None and not rejected:
            self.unobserved += 1
        if rejected:
            self.rejected += 1

    def _check_forever(self) -> None:
        while True:
            self.expire(time.monotonic() - self.loss_timeout)
            gevent.sleep(CHECK_INTERVAL)

    def expire(self, cutoff: float) -> None:
        while self.outstanding:
            msgid, message = next(iter(self.outstanding.items()))
            if message.sent_at > cutoff:
                return
            del self.outstanding[msgid]
            # Lost only if some listener stayed in the channel for the whole window.
            if not any(m.active for m in message.listeners):
                self.unobserved += 1
                continue
            self.lost += 1
            assert self.environment is not None
            self.environment.events.request.fire(
                request_type=message.kind, name="lost", response_time=self.loss_timeout * 1000,
                response_length=0, context={},
                exception=MessageLost(f"no other user received it within {self.loss_timeout:g}s"),
            )


TRACKER = Tracker()
SETTINGS: Settings | None = None
_user_counters: dict[str, itertools.count[int]] = {}
# Logins are new for every process: the server's rate limit and duplicate
# checks remember a user for 30 s, across runs.
_LOGIN_PREFIX = secrets.token_hex(3)
_logins = itertools.count(1)


def _new_login() -> str:
    return f"lt{_LOGIN_PREFIX}_{next(_logins)}"


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    global SETTINGS
    if isinstance(environment.runner, MasterRunner):
        return  # workers run the users and track their messages
    TRACKER.stop()
    try:
        SETTINGS = Settings.from_environment(environment)
    except ValueError as exc:
        SETTINGS = None
        _abort(environment, str(exc))
        return
    needs_token = any(not getattr(cls, "anonymous", True) for cls in environment.user_classes)
    if needs_token and SETTINGS.secret is None:
        _abort(environment, SETTINGS.secret_problem)
        SETTINGS = None  # users spawned before the stop stay idle
        return
    TRACKER.start(environment, SETTINGS.loss_timeout)


def _abort(environment: Environment, reason: str) -> None:
    logger.error("loadtest: %s", reason)
    environment.process_exit_code = 2
    runner = environment.runner
    if runner is not None:
        headless = getattr(environment.parsed_options, "headless", False)
        gevent.spawn(runner.quit if headless else runner.stop)


@events.test_stopping.add_listener
def _on_test_stopping(environment: Environment, **_: Any) -> None:
    """Before users disconnect: stop chatting and give messages in flight time to arrive."""
    if isinstance(environment.runner, MasterRunner) or not TRACKER.running:
        return
    TRACKER.draining = True
    deadline = time.monotonic() + TRACKER.loss_timeout + 2 * CHECK_INTERVAL
    while TRACKER.outstanding and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if getattr(environment.parsed_options, "csv_prefix", None):
        # Locust's CSV writer samples once a second and is not flushed at exit.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner) or not TRACKER.running:
        return
    TRACKER.stop()
    print(TRACKER.summary(), flush=True)
    if TRACKER.lost:
        environment.process_exit_code = 1


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    # On SIGTERM or Ctrl-C Locust settles the exit code before it stops the
    # users; stopping them now lets lost messages count.
    runner = environment.runner
    if runner is not None and not isinstance(runner, MasterRunner):
        runner.stop()


# ---- transports


class Connection(Protocol):
    def send_lines(self, *lines: str) -> None: ...

    def read_lines(self) -> list[str]:
        """The next complete lines; an empty list once the server has closed."""
        ...

    def shutdown(self) -> None:
        """Wakes up a reader blocked in read_lines."""
        ...

    def close(self) -> None: ...


class TcpConnection:
    def __init__(self, address: tuple[str, int]) -> None:
        self._sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        self._sock.settimeout(None)
        self._buffer = b""
        # The reader greenlet answers PINGs while a task may be chatting.
        self._lock = Semaphore()

    def send_lines(self, *lines: str) -> None:
        data = "".join(line + "\r\n" for line in lines).encode()
        with self._lock:
            self._sock.sendall(data)

    def read_lines(self) -> list[str]:
        while True:
            chunk = self._sock.recv(65536)
            if not chunk:
                return []
            self._buffer += chunk
            if b"\n" in chunk:
                break
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines if line.strip()]

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


class WsConnection:
    def __init__(self, url: str) -> None:
        self._ws = websocket.create_connection(url, timeout=CONNECT_TIMEOUT, subprotocols=["irc"])
        self._ws.settimeout(None)

    def send_lines(self, *lines: str) -> None:
        # websocket-client serialises sends itself; chatd splits a frame into lines.
        self._ws.send("".join(line + "\r\n" for line in lines))

    def read_lines(self) -> list[str]:
        while True:
            data = self._ws.recv()
            if not data:  # a close frame
                return []
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            lines = [line for line in text.split("\r\n") if line]
            if lines:
                return lines

    def shutdown(self) -> None:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self._ws.send_close()
            if self._ws.sock is not None:
                self._ws.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._ws.shutdown()


TRANSPORT_ERRORS = (OSError, websocket.WebSocketException)


# ---- users


class ChatUser(User):
    """A connection in one channel at a time; a reader greenlet handles what arrives."""

    abstract = True
    anonymous = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.settings: Settings | None = None
        self.target = Target("IRC", "")
        self.login = ""
        self.channel = ""
        self.conn: Connection | None = None
        self.reader: gevent.Greenlet | None = None
        self.membership: Membership | None = None
        self.registered = False
        self.pending: deque[str] = deque()  # sent messages awaiting USERSTATE or a rejection
        self._waiters: dict[str, AsyncResult] = {}
        self._join_state_due = ""  # the USERSTATE that follows a JOIN acknowledges no message
        self._last_notice = ""

    # ---- lifecycle
    def on_start(self) -> None:
        self.settings = SETTINGS
        if self.settings is None:
            return  # the run is being aborted
        counter = _user_counters.setdefault(type(self).__name__, itertools.count())
        self.target = self.settings.pick_target(next(counter))
        self.channel = self.settings.pick_channel()
        self.ensure_connected()

    def on_stop(self) -> None:
        self.disconnect()

    def ensure_connected(self) -> bool:
        if self.conn is not None:
            return True
        if self.settings is None:
            return False
        return self.connect() and self.join()

    def connect(self) -> bool:
        started = time.perf_counter()
        self._last_notice = ""
        try:
            lines = [f"CAP REQ :{CAPS}"]
            if self.anonymous:
                self.login = f"justinfan{random.randrange(10_000, 100_000_000)}"
            else:
                self.login = self.login or _new_login()
                lines.append(f"PASS oauth:{self._token()}")
            lines.append(f"NICK {self.login}")
            self.conn = self._open()
            self.reader = gevent.spawn(self._read, self.conn)
            welcome = self._expect("376")
            self.conn.send_lines(*lines)
            self._wait(welcome, "376 (end of MOTD)")
        except (*TRANSPORT_ERRORS, ChatError) as exc:
            self._report("connect", _since(started), exc)
            self.disconnect()
            return False
        self.registered = True
        self._report("connect", _since(started))
        return True

    def join(self) -> bool:
        assert self.conn is not None
        started = time.perf_counter()
        joined = self._expect(f"366 {self.channel}")
        self._join_state_due = self.channel
        try:
            self.conn.send_lines(f"JOIN {self.channel}")
            self._wait(joined, f"366 (end of NAMES) for {self.channel}")
        except (*TRANSPORT_ERRORS, ChatError) as exc:
            self._report("join", _since(started), exc)
            self.disconnect()  # start afresh rather than guess the channel state
            return False
        self._report("join", _since(started))
        return True

    def part(self) -> None:
        assert self.conn is not None and self.settings is not None
        # A rejection still names this channel after PART, but its acceptance
        # (USERSTATE) would not come: settle what is pending first.
        deadline = time.monotonic() + self.settings.loss_timeout
        while self.pending and self.conn is not None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self.pending.clear()
        self._end_membership()
        if self.conn is not None:
            self.conn.send_lines(f"PART {self.channel}")

    def disconnect(self) -> None:
        conn, reader = self.conn, self.reader
        self.conn = self.reader = None
        self.registered = False
        self._end_membership()
        for msgid in self.pending:
            TRACKER.forget(msgid)
        self.pending.clear()
        self._fail_waiters(ServerClosed("connection closed"))
        if conn is not None:
            conn.shutdown()
        if reader is not None:
            reader.join(timeout=CLOSE_TIMEOUT)
            reader.kill()
        if conn is not None:
            conn.close()

    # ---- tasks shared by every user
    @task(1)
    def hop(self) -> None:
        """Churn: leave the channel for another one."""
        if TRACKER.draining or not self.ensure_connected():
            return
        assert self.settings is not None
        try:
            self.part()
        except TRANSPORT_ERRORS:
            self.disconnect()
            return
        self.channel = self.settings.pick_channel(avoid=self.channel)
        if self.conn is not None:
            self.join()

    # ---- helpers
    def _open(self) -> Connection:
        if self.target.kind == "WS":
            return WsConnection(self.target.url)
        return TcpConnection(self.target.address)

    def _token(self) -> str:
        assert self.settings is not None
        if self.settings.secret is None:
            raise SecretMissing(self.settings.secret_problem)
        return issue_token(self.settings.secret, self.login)

    def _expect(self, key: str) -> AsyncResult:
        waiter = self._waiters[key] = AsyncResult()
        return waiter

    def _wait(self, waiter: AsyncResult, what: str) -> None:
        try:
            waiter.get(timeout=REPLY_TIMEOUT)
        except gevent.Timeout:
            raise ReplyTimeout(f"no {what} within {REPLY_TIMEOUT:g}s") from None

    def _fail_waiters(self, error: ChatError) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.set_exception(error)

    def _end_membership(self) -> None:
        if self.membership is not None:
            TRACKER.left(self.membership)
            self.membership = None

    def _report(self, name: str, response_time_ms: float, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type=self.target.kind, name=name, response_time=response_time_ms,
            response_length=0, exception=exc, context={},
        )

    # ---- the reader greenlet
    def _read(self, conn: Connection) -> None:
        try:
            while lines := conn.read_lines():
                for line in lines:
                    self._handle(conn, line)
        except TRANSPORT_ERRORS:
            pass
        if self.conn is conn:  # the server closed it, not disconnect()
            self.conn = self.reader = None
            self._end_membership()
            for msgid in self.pending:
                TRACKER.forget(msgid)
            self.pending.clear()
            reason = f"server closed the connection: {self._last_notice or 'no reason given'}"
            self._fail_waiters(ServerClosed(reason))
            if self.registered:
                self._report("disconnect", 0.0, ServerClosed(reason))
            self.registered = False
            conn.close()

    def _handle(self, conn: Connection, line: str) -> None:
        try:
            message = parse(line)
        except IRCParseError:
            return
        command = message.command
        if command == "PRIVMSG":
            self._on_privmsg(message)
        elif command == "USERSTATE":
            self._on_userstate(message)
        elif command == "NOTICE":
            self._on_notice(message)
        elif command == "376":
            self._resolve("376")
        elif command == "366" and len(message.params) >= 2:
            channel = message.params[1]
            if channel == self.channel and self.membership is None:
                # From here on the edge delivers everything said in the channel.
                self.membership = TRACKER.joined(self, channel)
            self._resolve(f"366 {channel}")
        elif command == "PING":
            conn.send_lines(f"PONG :{message.params[-1] if message.params else 'tmi.twitch.tv'}")

    def _resolve(self, key: str) -> None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            waiter.set(None)

    def _on_privmsg(self, message: Message) -> None:
        text = message.params[-1] if len(message.params) >= 2 else ""
        if not text.startswith(TEXT_PREFIX):
            return
        try:
            _, msgid, sent_ns = text.split(" ", 2)
            latency_ms = (time.time_ns() - int(sent_ns)) / 1e6
        except ValueError:
            return
        self._report("deliver", max(latency_ms, 0.0))
        TRACKER.received(msgid, self)

    def _on_userstate(self, message: Message) -> None:
        channel = message.params[0] if message.params else ""
        if channel == self._join_state_due:
            self._join_state_due = ""
        elif channel == self.channel and self.pending:
            self.pending.popleft()  # accepted; answers come in send order

    def _on_notice(self, message: Message) -> None:
        target = message.params[0] if message.params else ""
        text = message.params[-1] if message.params else ""
        msg_id = message.tags.get("msg-id", "")
        if not msg_id:
            self._last_notice = text
            return
        joining = self._waiters.pop(f"366 {target}", None)
        if joining is not None:
            joining.set_exception(Refused(f"{msg_id}: {text}"))
        elif target == self.channel and self.pending:
            TRACKER.forget(self.pending.popleft(), rejected=True)
            self._report(f"rejected:{msg_id}", 0.0, Rejected(text))


class Lurker(ChatUser):
    """An anonymous viewer: reads its channel and now and then moves on."""

    weight = 9
    wait_time = between(5, 15)

    @task(9)
    def lurk(self) -> None:
        self.ensure_connected()  # reconnects if the server dropped us


class Chatter(ChatUser):
    """A logged-in viewer who talks, faster in #tpp, always within the rate limit."""

    weight = 1
    anonymous = False

    def wait_time(self) -> float:
        low, high = TPP_CHAT_WAIT if self.channel == TPP_CHANNEL else CHAT_WAIT
        return random.uniform(low, high)

    @task(20)
    def chat(self) -> None:
        if TRACKER.draining or not self.ensure_connected():
            return
        assert self.conn is not None
        msgid = TRACKER.new_message(self, self.target.kind, self.channel)
        self.pending.append(msgid)
        try:
            self.conn.send_lines(f"PRIVMSG {self.channel} :{TEXT_PREFIX}{msgid} {time.time_ns()}")
        except TRANSPORT_ERRORS:
            self.disconnect()  # forgets the pending message too
