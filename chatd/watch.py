"""`chatd highlights watch [--server irc://host:port] #c1 #c2 …`: highlights from outside.

Like the seed's emitter, it joins channels anonymously (justinfan) on any
Twitch-compatible IRC server — Twitch itself, or a chatd — and keeps one point
per chat message, never its text: the PRIVMSG's `tmi-sent-ts` (this machine's
clock where the server sends none) and its `id`. The exchange's detector
(analytics/highlights.py, set by the same HIGHLIGHT_* variables) judges them, so
the same traffic gives the same highlights. Each is printed as a JSON line —
the object the exchange stores and its API lists — and posted to every
`--webhook`, signed as the exchange signs them (common/webhooks.py) and retried
with backoff while the process runs. A lost connection comes back with backoff;
the windows it may have missed are not judged (Detector.gap).

The IRC client is a few lines over common/irc.py's parser: IRC libraries on PyPI
are client frameworks with their own loops, and all this needs is to read.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from analytics.highlights import Detector, Settings
from common import twitch, wire
from common.config import ConfigError, Env, parse_url
from common.irc import IRCParseError, parse
from common.webhooks import Signer, WebhookSettings, backoff, post
from common.wire import Highlight

TICK = 0.2
JOIN_BATCH, JOIN_PAUSE = 20, 10.5  # Twitch allows 20 JOINs per 10 s (chatd too, per connection)
READ_TIMEOUT = 400.0  # Twitch PINGs every five minutes: silence past this is a dead connection
RECONNECT_MAX = 30.0
MAX_LINE = 64 * 1024
PREFIX = "chatd highlights watch"


def say(text: str) -> None:
    print(f"{PREFIX}: {text}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_server(text: str) -> tuple[str, int, bool]:
    """`irc://host:port` or `ircs://host:port` → (host, port, TLS)."""
    parts = urlsplit(text if "://" in text else f"irc://{text}")
    if parts.scheme not in ("irc", "ircs") or not parts.hostname:
        raise ValueError(f"expected irc://host:port or ircs://host:port, got {text!r}")
    tls = parts.scheme == "ircs"
    try:
        port = parts.port or (6697 if tls else 6667)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    return parts.hostname, port, tls


@dataclass
class _Delivery:
    url: str
    body: bytes
    id: str
    attempts: int = 0
    due: float = 0.0


class Deliveries:
    """Each highlight to every webhook, retried with backoff while the watcher runs."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.signer = Signer(settings.secret)
        self.waiting: list[_Delivery] = []
        self._busy: set[asyncio.Task[None]] = set()

    def submit(self, highlight: Highlight) -> None:
        body = wire.encode(highlight)
        for url in self.settings.urls:
            if len(self.waiting) >= self.settings.queue:
                say(f"webhook queue full: {highlight.id} dropped for {url}")
                continue
            self.waiting.append(_Delivery(url, body, highlight.id))

    async def run(self) -> None:
        async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session:
            while True:
                await asyncio.sleep(TICK)
                now = time.monotonic()
                due = [d for d in self.waiting if d.due <= now]
                self.waiting = [d for d in self.waiting if d.due > now]
                for delivery in due:
                    task = asyncio.get_running_loop().create_task(self._send(session, delivery))
                    self._busy.add(task)
                    task.add_done_callback(self._busy.discard)

    async def _send(self, session: aiohttp.ClientSession, delivery: _Delivery) -> None:
        reason = await post(session, delivery.url, delivery.body, delivery.id, self.signer, self.settings.timeout)
        if not reason:
            return
        delivery.attempts += 1
        if delivery.attempts >= self.settings.attempts:
            say(f"webhook {delivery.url}: {delivery.id} dropped after {delivery.attempts} attempts ({reason})")
            return
        wait = backoff(delivery.attempts, self.settings.backoff)
        say(f"webhook {delivery.url}: {reason}; {delivery.id} again in {wait:g} s")
        delivery.due = time.monotonic() + wait
        self.waiting.append(delivery)


class Watcher:
    def __init__(self, server: str, channels: list[str], detector: Detector, deliveries: Deliveries | None) -> None:
        self.server = server
        self.host, self.port, self.tls = parse_server(server)
        self.channels = channels
        self.detector = detector
        self.deliveries = deliveries
        self.nick = f"justinfan{random.randint(10_000, 99_999)}"

    async def run(self) -> None:
        ticker = asyncio.get_running_loop().create_task(self._tick())
        sender = asyncio.get_running_loop().create_task(self.deliveries.run()) if self.deliveries else None
        try:
            delay, connected_before = 1.0, False
            while True:
                try:
                    await self._session(connected_before)
                    delay, connected_before = 1.0, True  # it ended in an orderly way (RECONNECT): at once
                    continue
                except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                    say(f"{self.server}: {type(exc).__name__} {exc}; connecting again in {delay:g} s")
                connected_before = True
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
        finally:
            ticker.cancel()
            if sender is not None:
                sender.cancel()

    async def _session(self, again: bool) -> None:
        context = ssl.create_default_context() if self.tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=context, limit=MAX_LINE), 30)
        try:
            writer.write(f"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK {self.nick}\r\n".encode())
            await writer.drain()
            joining: asyncio.Task[None] | None = None
            while True:
                raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                if not raw:
                    raise ConnectionError("the server closed the connection")
                try:
                    message = parse(raw.decode("utf-8", "replace").rstrip("\r\n"))
                except IRCParseError:
                    continue
                if message.command == "PRIVMSG" and len(message.params) == 2:
                    sent = message.tags.get("tmi-sent-ts", "")
                    self.detector.add(message.params[0], int(sent) if sent.isdigit() else now_ms(),
                                      message.tags.get("id", ""))
                elif message.command == "PING":
                    writer.write(f"PONG :{message.params[-1] if message.params else ''}\r\n".encode())
                elif message.command == "001" and joining is None:
                    say(f"connected to {self.server} as {self.nick}")
                    joining = asyncio.get_running_loop().create_task(self._join(writer))
                elif message.command == "JOIN" and (message.source or "").startswith(self.nick + "!"):
                    say(f"joined {message.params[0]}")
                    if again:  # what the channel said while we were away is not in these windows
                        self.detector.gap(now_ms(), message.params[0])
                elif message.command == "RECONNECT":
                    say(f"{self.server} asked to reconnect")
                    return
                elif message.command == "NOTICE" and message.params and message.params[0] == "*":
                    raise ConnectionError(message.params[-1])  # e.g. a refused login
        finally:
            if joining is not None:
                joining.cancel()
            writer.close()

    async def _join(self, writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(self.channels), JOIN_BATCH):
            if start:
                await asyncio.sleep(JOIN_PAUSE)
            writer.write(f"JOIN {','.join(self.channels[start:start + JOIN_BATCH])}\r\n".encode())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for highlight in self.detector.advance(now_ms()).highlights:
                print(wire.encode(highlight).decode(), flush=True)
                if self.deliveries is not None:
                    self.deliveries.submit(highlight)


def run(args: argparse.Namespace) -> int:
    channels = ["#" + name.lstrip("#").lower() for name in args.channels]
    bad = [name for name in channels if not twitch.is_valid_channel(name)]
    if bad:
        say(f"not a channel name: {bad[0]}")
        return 2
    try:
        parse_server(args.server)
        env = Env()
        settings = Settings.from_env(env)
        deliveries = None
        if args.webhook:
            urls = [parse_url(url) for url in args.webhook]
            webhooks = WebhookSettings.from_env(env, urls=urls)
            assert webhooks is not None
            deliveries = Deliveries(webhooks)
    except (ConfigError, ValueError) as exc:
        say(str(exc))
        return 2
    watcher = Watcher(args.server, channels, Detector(settings), deliveries)

    async def main() -> int:
        task = asyncio.get_running_loop().create_task(watcher.run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        if deliveries is not None and deliveries.waiting:
            say(f"stopped with {len(deliveries.waiting)} webhook deliveries not made")
        return 0

    return asyncio.run(main())
