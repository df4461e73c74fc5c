"""Chaos: a whole supervised cluster (`chatd up`: 2 edges, 2 clues, 2 exchanges, 3
shards) under steady traffic to 200 readers on TCP and WebSocket, one fault per phase.

Phases: a baseline; SIGKILL of a Redis shard, an exchange, a clue and an edge (each
comes back under supervision; clients of the killed edge reconnect); SIGSTOP of an
edge for 3 s; a CPU hog beside a 12,000-message burst. Senders send one message at
a time and wait for its outcome (USERSTATE: accepted; NOTICE: refused, with the
msg-id the sender was told), so every outcome belongs to one message; burst senders
pipeline and are correlated by counting. A phase ends with a marker message per
channel that travels the same pipeline; once every connected reader has it, the
phase's deliveries are complete, and they are checked for readers that stayed
connected: nothing accepted lost, nothing duplicated, no sender's messages out of
order, every reader of a channel in the same order, nothing refused delivered and
nothing accepted delivered to no one.

    CHAOS_REPORT=/tmp/chaos.json .venv/bin/pytest tests/test_chaos.py -s
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import websockets
from support import running_cluster

from chatd.cluster import die_with_parent
from common.ring import Ring
from common.tokens import stable_id

READERS = 200  # half TCP, half WebSocket, half on each edge
STEADY_SENDERS = 16  # 8 per edge, each one message at a time
STEADY_INTERVAL = 0.1  # s between one sender's messages: about 160 messages/s in all
BURST = 12_000
BURST_SENDERS = 24
BURST_CHUNK = 50  # lines in one write; the next chunk goes once all of these are answered
LEAD, TAIL = 2.0, 3.0  # s of steady traffic before the fault and after recovery
ANSWER_TIMEOUT = 15.0  # a message's outcome (HTTP_TIMEOUT 2 s, retries for 3 s, then settled)
CONNECT_TIMEOUT = 20.0  # (re)connecting and registering, a restart included
RESTART_TIMEOUT = 20.0
BARRIER_TIMEOUT = 30.0
BURST_TIMEOUT = 90.0
MARK = b"chaos_mark "
ENV = {
    "RATE_LIMIT": "1000000", "RATE_LIMIT_PRIVILEGED": "1000000", "RATE_WINDOW": "1s",
    "JOIN_RATE_LIMIT": "1000000", "EDGE_JOIN_RATE_LIMIT": "1000000", "EDGE_MAX_CONNECTIONS_PER_IP": "0",
    "HTTP_TIMEOUT": "2s",
}


async def wait_until(done: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll `done` until it holds; past `timeout`, fail saying what was awaited and how it stands."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what()}")
        await asyncio.sleep(0.05)


# ---- raw clients: a reader parses only what it needs, so 200 of them fit beside the cluster
class Link:
    """One client connection, TCP or WebSocket, handing each received line (bytes) to `on_line`."""

    def __init__(self, on_line: Callable[[bytes], None], on_close: Callable[[], None]) -> None:
        self.on_line, self.on_close = on_line, on_close
        self.open = True
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._ws = None
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, transport: str, port: int, on_line, on_close) -> Link:
        link = cls(on_line, on_close)
        if transport == "tcp":
            await asyncio.get_running_loop().create_connection(lambda: _TcpProtocol(link), "127.0.0.1", port)
        else:
            link._ws = await websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=["irc"], max_size=None,
                                                compression=None, ping_interval=None, open_timeout=5)
            link._pump = asyncio.get_running_loop().create_task(link._read_ws())
        return link

    def feed(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\r\n")
        self._buffer = lines.pop()
        for line in lines:
            self.on_line(line)

    async def _read_ws(self) -> None:
        try:
            while True:
                self.feed(await self._ws.recv(decode=False))
        except (websockets.ConnectionClosed, OSError):
            pass
        finally:
            self.closed()

    def closed(self) -> None:
        if self.open:
            self.open = False
            self.on_close()

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        if self._transport is not None:
            self._transport.write(data)
        else:  # sends start in call order: one lock, FIFO
            asyncio.get_running_loop().create_task(self._send_ws(data.decode()))

    async def _send_ws(self, text: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, OSError):
            await self._ws.send(text)

    async def close(self) -> None:
        self.on_close = lambda: None
        if self._transport is not None:
            self._transport.abort()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        self.open = False


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, link: Link) -> None:
        self.link = link

    def connection_made(self, transport) -> None:
        self.link._transport = transport

    def data_received(self, data: bytes) -> None:
        self.link.feed(data)

    def connection_lost(self, exc) -> None:
        self.link.closed()


class Client:
    """What readers and senders share: a place (edge, transport), registration, reconnection."""

    def __init__(self, chaos: Chaos, login: str, edge: int, transport: str, moves: bool) -> None:
        self.chaos, self.login, self.edge, self.transport = chaos, login, edge, transport
        self.moves = moves  # reconnects to the other edge (else waits for its own to come back)
        self.link: Link | None = None
        self.connections = 0
        self.ready = False
        self.connecting = False
        self.stopping = False

    def hello(self) -> bytes:
        raise NotImplementedError

    def registered(self) -> bool:
        raise NotImplementedError

    async def connect(self) -> None:
        """Connect, register (and join) until it works, within CONNECT_TIMEOUT."""
        self.connecting = True
        try:
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while True:
                irc, ws = self.chaos.ports[self.edge]
                try:
                    self.link = await Link.connect(self.transport, irc if self.transport == "tcp" else ws,
                                                   self.on_line, self.on_close)
                except Exception as exc:  # refused while its edge restarts, or cut off mid-handshake
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{self.login}: no connection to edge-{self.edge}: {exc!r}") from exc
                    await asyncio.sleep(0.1)  # pacing the attempts
                    continue
                self.connections += 1
                self.reset()
                self.link.write(self.hello())
                await wait_until(lambda: self.registered() or not self.link.open, CONNECT_TIMEOUT,
                                 lambda: f"{self.login} to register and join on edge-{self.edge}/{self.transport}")
                if self.link.open:
                    self.ready = True
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.login}: closed while registering on edge-{self.edge}")
        finally:
            self.connecting = False

    def reset(self) -> None:
        pass

    def on_line(self, line: bytes) -> None:
        raise NotImplementedError

    def pong(self, line: bytes) -> None:
        self.link.write(b"PONG" + line[4:] + b"\r\n")

    def on_close(self) -> None:
        self.ready = False
        if not self.stopping and not self.connecting:  # a connection lost while registering is retried there
            if self.moves:
                self.edge = 1 - self.edge
            self.chaos.spawn(self.connect())


class Reader(Client):
    """Anonymous; records, per channel, the text of every PRIVMSG in arrival order."""

    def __init__(self, chaos: Chaos, index: int, channels: list[bytes], edge: int, transport: str) -> None:
        super().__init__(chaos, f"justinfan{index}", edge, transport, moves=(index // 16) % 2 == 0)
        self.channels = channels
        self.received: dict[bytes, list[bytes]] = {channel: [] for channel in channels}
        self.marks: dict[bytes, bytes] = {}
        self.joined: set[bytes] = set()

    def hello(self) -> bytes:
        return b"NICK %s\r\nJOIN %s\r\n" % (self.login.encode(), b",".join(self.channels))

    def registered(self) -> bool:
        return len(self.joined) == len(self.channels)

    def reset(self) -> None:
        self.joined = set()

    def on_line(self, line: bytes) -> None:
        parts = line.split(b" ", 3)
        if len(parts) == 4 and parts[1] == b"PRIVMSG":
            text = parts[3][1:]
            self.received.setdefault(parts[2], []).append(text)
            if text.startswith(MARK):
                self.marks[parts[2]] = text.rsplit(b" ", 1)[1]
        elif parts[0] == b"PING":
            self.pong(line)
        elif len(parts) == 4 and parts[1] == b"366":
            self.joined.add(parts[3].split(b" ", 1)[0])

    def take(self) -> dict[bytes, list[bytes]]:
        """This phase's deliveries; the next phase starts empty."""
        taken, self.received = self.received, {channel: [] for channel in self.channels}
        return taken


class Sender(Client):
    """Logged in with tags and commands; every USERSTATE or NOTICE for a channel is one outcome."""

    def __init__(self, chaos: Chaos, login: str, edge: int, transport: str, moves: bool) -> None:
        super().__init__(chaos, login, edge, transport, moves)
        self.n = 0  # the number in this sender's next text, across phases and connections
        self.outcomes: list[tuple[bytes, str]] = []  # (channel, "accepted" | msg-id), this connection
        self.answered = asyncio.Event()
        self.at_376 = False

    def hello(self) -> bytes:
        token = self.chaos.cluster.token(self.login)
        return (f"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nPASS oauth:{token}\r\n"
                f"NICK {self.login}\r\n").encode()

    def registered(self) -> bool:
        return self.at_376

    def reset(self) -> None:
        self.at_376 = False
        self.outcomes = []

    def on_line(self, line: bytes) -> None:
        if b" USERSTATE #" in line:
            self.outcomes.append((line.rsplit(b" ", 1)[1], "accepted"))
            self.answered.set()
        elif b" NOTICE #" in line:
            tags, _, rest = line.partition(b" ")
            found = dict(item.split(b"=", 1) for item in tags[1:].split(b";") if b"=" in item)
            self.outcomes.append((rest.split(b" ", 3)[2], found.get(b"msg-id", b"?").decode()))
            self.answered.set()
        elif line.startswith(b"PING"):
            self.pong(line)
        elif b" 376 " in line:
            self.at_376 = True

    def on_close(self) -> None:
        self.answered.set()
        super().on_close()

    async def send(self, lines: list[tuple[bytes, bytes]]) -> list[tuple[bytes, str]]:
        """Send (channel, text) lines in one write; their outcomes in arrival order, then
        `unanswered` for each left when the connection died, `silent` when none came in time."""
        if not self.ready:
            await wait_until(lambda: self.ready, CONNECT_TIMEOUT, lambda: f"{self.login} to reconnect")
        link, outcomes = self.link, self.outcomes  # a new connection starts a new list
        start = len(outcomes)
        link.write(b"".join(b"PRIVMSG %s :%s\r\n" % line for line in lines))
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while len(outcomes) < start + len(lines):
            remaining = deadline - time.monotonic()
            if not link.open or remaining <= 0:
                got = outcomes[start:]
                return got + [(channel, "silent" if link.open else "unanswered") for channel, _ in lines[len(got):]]
            self.answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.answered.wait(), remaining)
        return outcomes[start:start + len(lines)]

    def text(self, extra: str = "") -> bytes:
        self.n += 1
        return f"{self.login} {self.n}{extra}".encode()


@dataclass
class Sent:
    login: str
    n: int
    channel: bytes
    phase: int
    outcome: str = ""  # accepted, a msg-id, unanswered (the sender's connection died), silent
    sent_at: float = 0.0
    answered_at: float = 0.0


@dataclass
class BurstGroup:
    """A burst sender's messages to one channel: outcomes are known by count only."""

    phase: int
    texts: set[bytes] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)


class Chaos:
    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.readers: list[Reader] = []
        self.senders: list[Sender] = []
        self.bursters: list[Sender] = []
        self.marker: Sender | None = None
        self.sent: dict[bytes, Sent] = {}
        self.bursts: dict[tuple[str, bytes, int], BurstGroup] = {}
        self.burst_of: dict[bytes, BurstGroup] = {}
        self.phase = 0
        self.tasks: set[asyncio.Task] = set()
        self.failures: list[str] = []  # background reconnections that gave up
        self.ports = {edge: cluster.edge_addresses(edge) for edge in (0, 1)}  # kept across restarts

    def spawn(self, coro: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(repr(task.exception()))

    # ---- setup
    async def start(self) -> None:
        exchanges = Ring(self.cluster.exchange_urls)
        # Four channels, two owned by each exchange.
        owned: dict[str, list[str]] = defaultdict(list)
        for n in range(1000):
            name = f"#chaos{n}"
            if len(owned[exchanges.node_for(name)]) < 2:
                owned[exchanges.node_for(name)].append(name)
            if sum(map(len, owned.values())) == 4:
                break
        self.channels = [name.encode() for names in owned.values() for name in names]
        for i in range(READERS):
            k = i // 4  # every channel gets readers on both edges and both transports
            channels = [self.channels[i % 4]] + ([self.channels[(i + 1) % 4]] if k % 3 == 0 else [])
            self.readers.append(Reader(self, i, channels, edge=k % 2, transport=("tcp", "ws")[(k // 2) % 2]))
        clues, shards = Ring(self.cluster.clue_urls), Ring(self.cluster.redis_addresses)
        buckets: Counter[tuple[str, str]] = Counter()  # (clue, shard): senders spread over both
        n = 0
        while len(self.senders) < STEADY_SENDERS:
            login, n = f"chaos_s{n}", n + 1
            bucket = (clues.node_for(login), shards.node_for(f"{{u:{stable_id(login)}}}:rate"))
            if buckets[bucket] < -(-STEADY_SENDERS // 6):
                buckets[bucket] += 1
                j = len(self.senders)
                self.senders.append(Sender(self, login, j % 2, ("tcp", "ws")[(j // 2) % 2], moves=j % 4 < 2))
        self.bursters = [Sender(self, f"chaos_b{j}", j % 2, ("tcp", "ws")[(j // 2) % 2], moves=j % 4 < 2)
                         for j in range(BURST_SENDERS)]
        self.marker = Sender(self, "chaos_mark", 0, "tcp", moves=True)
        semaphore = asyncio.Semaphore(40)

        async def connect(client: Client) -> None:
            async with semaphore:
                await client.connect()

        await asyncio.gather(*(connect(c) for c in [*self.readers, *self.senders, *self.bursters, self.marker]))

    async def stop(self) -> None:
        for client in [*self.readers, *self.senders, *self.bursters, self.marker]:
            if client is not None:
                client.stopping = True
                if client.link is not None:
                    await client.link.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ---- traffic
    async def steady(self, sender: Sender, stop: asyncio.Event, offset: float) -> None:
        """One message at a time, round the channels, each answered before the next; senders
        start `offset` apart, so a fault finds messages at every stage of the pipeline."""
        await asyncio.sleep(offset)
        pace = time.monotonic()
        while not stop.is_set():
            channel = self.channels[sender.n % len(self.channels)]
            text = sender.text()
            record = self.sent[text] = Sent(sender.login, sender.n, channel, self.phase, sent_at=time.monotonic())
            record.outcome = (await sender.send([(channel, text)]))[0][1]
            record.answered_at = time.monotonic()
            pace = max(pace + STEADY_INTERVAL, time.monotonic() - STEADY_INTERVAL)
            await asyncio.sleep(max(0.0, pace - time.monotonic()))  # pacing the rate

    async def burst(self, sender: Sender, count: int) -> None:
        """`count` messages in pipelined chunks, correlated by counting answers per channel."""
        for first in range(0, count, BURST_CHUNK):
            lines = []
            for _ in range(min(BURST_CHUNK, count - first)):
                channel = self.channels[sender.n % len(self.channels)]
                text = sender.text()
                group = self.bursts.setdefault((sender.login, channel, self.phase), BurstGroup(self.phase))
                group.texts.add(text)
                self.burst_of[text] = group
                lines.append((channel, text))
            for channel, outcome in await sender.send(lines):
                self.bursts[(sender.login, channel, self.phase)].outcomes[outcome] += 1

    async def barrier(self) -> float:
        """A marker per channel, accepted, then seen by every connected reader: the phase's
        deliveries are all in. Returns how long it took."""
        started = time.monotonic()
        await wait_until(lambda: all(r.ready for r in self.readers) and self.marker.ready, CONNECT_TIMEOUT,
                         lambda: f"readers to be back: {[r.login for r in self.readers if not r.ready][:5]}")
        phase = str(self.phase).encode()
        for channel in self.channels:
            while True:
                text = self.marker.text(f" {self.phase}")
                record = self.sent[text] = Sent(self.marker.login, self.marker.n, channel, self.phase)
                record.outcome = (await self.marker.send([(channel, text)]))[0][1]
                if record.outcome == "accepted":
                    break
                assert time.monotonic() - started < BARRIER_TIMEOUT, f"marker for {channel} refused: {record}"
                await asyncio.sleep(0.2)  # pacing the retries

        def missing() -> list[str]:
            return [f"{r.login}@edge-{r.edge}/{r.transport}:{c.decode()}" for r in self.readers if r.ready
                    for c in r.channels if r.marks.get(c) != phase]

        await wait_until(lambda: not missing(), BARRIER_TIMEOUT,
                         lambda: f"markers of phase {self.phase} at {len(missing())} readers, e.g. {missing()[:4]}")
        return time.monotonic() - started

    # ---- one phase
    async def run_phase(self, name: str, fault: Callable[[], Awaitable[dict]]) -> dict:
        self.phase += 1
        start_connections = {r.login: r.connections for r in self.readers}
        health_before = await self.health()
        stop = asyncio.Event()
        traffic = [self.spawn(self.steady(sender, stop, j * STEADY_INTERVAL / len(self.senders)))
                   for j, sender in enumerate(self.senders)]
        started = time.monotonic()
        await asyncio.sleep(LEAD)  # steady traffic before the fault
        fault_at = time.monotonic()
        info = await fault()
        await asyncio.sleep(TAIL)  # steady traffic after recovery
        stop.set()
        await asyncio.wait_for(asyncio.gather(*traffic), ANSWER_TIMEOUT + CONNECT_TIMEOUT)
        barrier_s = await self.barrier()
        stayed = {r.login for r in self.readers if r.connections == start_connections[r.login] and r.ready}
        deliveries = {r.login: (r, r.take()) for r in self.readers}
        row = self.analyse(deliveries, stayed, fault_at)
        row.update(fault=name, seconds=round(time.monotonic() - started, 1), barrier_s=round(barrier_s, 2), **info)
        # Counters since the phase began (since its start, for an edge that restarted).
        row["edge_health"] = {edge: {k: v - before if v >= (before := health_before.get(edge, {}).get(k, 0)) else v
                                     for k, v in after.items()}
                              for edge, after in (await self.health()).items()}
        return row

    async def health(self) -> dict[str, dict[str, int]]:
        found = {}
        async with aiohttp.ClientSession() as http:
            for edge in ("edge-0", "edge-1"):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(self.cluster.components[edge].addresses["http"] + "/health",
                                        timeout=aiohttp.ClientTimeout(total=2)) as response:
                        body = await response.json()
                    found[edge] = {k: body[k] for k in ("sequence_gaps", "sequence_healed", "duplicates_dropped")}
        return found

    def analyse(self, deliveries: dict[str, tuple[Reader, dict[bytes, list[bytes]]]], stayed: set[str],
                fault_at: float) -> dict:
        phase = self.phase
        mine = {text: s for text, s in self.sent.items() if s.phase == phase}
        outcomes = Counter(s.outcome for s in mine.values())
        accepted: dict[bytes, set[bytes]] = defaultdict(set)
        for text, s in mine.items():
            if s.outcome == "accepted":
                accepted[s.channel].add(text)
        groups = {key: g for key, g in self.bursts.items() if g.phase == phase}
        received_anywhere: dict[bytes, set[bytes]] = defaultdict(set)
        for reader, got in deliveries.values():
            for channel, texts in got.items():
                received_anywhere[channel].update(texts)
        problems: Counter[str] = Counter()
        examples: dict[str, list[str]] = defaultdict(list)

        def problem(kind: str, count: int, example: str) -> None:
            if count:
                problems[kind] += count
                if len(examples[kind]) < 5:
                    examples[kind].append(example)

        # The burst: each sender's accepted count must match what reached readers.
        for (login, channel, _), g in groups.items():
            arrived = received_anywhere[channel] & g.texts
            told = g.outcomes["accepted"]
            if len(arrived) > told + g.outcomes["unanswered"]:  # an unanswered one may have gone through
                problem("ambiguous", len(arrived) - told - g.outcomes["unanswered"], f"{login} {channel}: "
                        f"{len(arrived)} delivered, told {dict(g.outcomes)}")
            elif len(arrived) < told:
                problem("ambiguous", told - len(arrived), f"{login} {channel}: {told} accepted, only "
                        f"{len(arrived)} reached any reader")
            accepted[channel] |= arrived
        # Per message: refused but delivered, accepted but delivered to no one, never answered.
        for text, s in mine.items():
            if s.outcome == "accepted" and text not in received_anywhere[s.channel]:
                problem("ambiguous", 1, f"{text.decode()} accepted, reached no reader")
            elif s.outcome not in ("accepted", "unanswered") and text in received_anywhere[s.channel]:
                problem("ambiguous", 1, f"{text.decode()} refused ({s.outcome}) yet delivered")
            if s.outcome == "unanswered" and len(examples["unanswered"]) < 10:
                examples["unanswered"].append(f"{text.decode()} sent {s.sent_at - fault_at:+.3f} s from the fault, "
                                              f"{'delivered' if text in received_anywhere[s.channel] else 'not delivered'}")
            if s.outcome == "silent":
                problem("ambiguous", 1, f"{text.decode()}: no answer in {ANSWER_TIMEOUT:.0f} s, still connected")
        # Per reader that stayed connected through the phase.
        order: dict[bytes, list[tuple[str, list[bytes]]]] = defaultdict(list)
        for login, (reader, got) in deliveries.items():
            if login not in stayed:
                continue
            for channel in reader.channels:
                texts = got.get(channel, [])
                counts = Counter(texts)
                problem("duplicated", sum(c - 1 for c in counts.values()),
                        f"{login} {channel}: {[t for t, c in counts.items() if c > 1][:3]}")
                missing = accepted[channel] - counts.keys()
                problem("lost", len(missing), f"{login}@{reader.transport} {channel}: {sorted(missing)[:3]}")
                last: dict[bytes, int] = {}
                for text in dict.fromkeys(texts):  # a repeat counts as duplicated, not also as reordered
                    sender, number = text.split(b" ", 2)[:2]
                    record = self.sent.get(text) or self.burst_of.get(text)
                    if record is None or record.phase != phase:
                        problem("reordered", 1, f"{login} {channel}: {text.decode()} from phase "
                                f"{record.phase if record else '?'} after that phase's marker")
                    if int(number) <= last.get(sender, 0):
                        problem("reordered", 1, f"{login} {channel}: {text.decode()} after {sender.decode()} "
                                f"{last[sender]}")
                    last[sender] = int(number)
                order[channel].append((login, list(dict.fromkeys(texts))))
        # Every reader of a channel in the same order as the one that got most.
        for channel, sequences in order.items():
            reference_login, reference = max(sequences, key=lambda item: len(item[1]))
            for login, sequence in sequences:
                common = set(reference) & set(sequence)
                a = [t for t in reference if t in common]
                b = [t for t in sequence if t in common]
                differ = sum(x != y for x, y in zip(a, b))
                problem("reordered", differ, f"{login} and {reference_login} disagree on {channel}'s order")
        refused = {k: v for k, v in outcomes.items() if k not in ("accepted", "unanswered", "silent")}
        for g in groups.values():
            for k, v in g.outcomes.items():
                if k not in ("accepted", "unanswered", "silent"):
                    refused[k] = refused.get(k, 0) + v
        burst_told = sum(g.outcomes["accepted"] for g in groups.values())
        burst_sent = sum(len(g.texts) for g in groups.values())
        refused_at = [s.answered_at for s in mine.values()
                      if s.outcome not in ("accepted", "unanswered") and s.login != "chaos_mark"]
        return {
            "accepted": outcomes["accepted"] + burst_told,
            "refused": refused,
            "unanswered": outcomes["unanswered"] + sum(g.outcomes["unanswered"] for g in groups.values()),
            "lost": problems["lost"],
            "duplicated": problems["duplicated"],
            "reordered": problems["reordered"],
            "ambiguous": problems["ambiguous"],
            "burst_sent": burst_sent,
            "burst_accepted": burst_told,
            "burst_share": round(burst_told / burst_sent, 4) if burst_sent else None,
            "refusing_s": round(max(refused_at) - fault_at, 2) if refused_at else 0.0,
            "readers_checked": len(stayed),
            "readers_reconnected": READERS - len(stayed),
            "examples": dict(examples),
        }


# ---- the faults
def kill_and_wait(chaos: Chaos, name: str) -> Callable[[], Awaitable[dict]]:
    async def fault() -> dict:
        killed = time.monotonic()
        chaos.cluster.kill(name, signal.SIGKILL)
        await asyncio.wait_for(chaos.cluster.wait_restarted(name), RESTART_TIMEOUT)
        back = time.monotonic() - killed
        clients = [*chaos.readers, *chaos.senders, *chaos.bursters, chaos.marker]
        await wait_until(lambda: all(c.ready for c in clients), CONNECT_TIMEOUT,
                         lambda: f"clients to reconnect: {[c.login for c in clients if not c.ready][:5]}, "
                         f"failures {chaos.failures[-3:]}")
        return {"restart_s": round(back, 2), "clients_back_s": round(time.monotonic() - killed, 2)}

    return fault


def freeze(chaos: Chaos, name: str, seconds: float) -> Callable[[], Awaitable[dict]]:
    async def fault() -> dict:
        chaos.cluster.kill(name, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the fault's length
        finally:
            chaos.cluster.kill(name, signal.SIGCONT)
        return {"stopped_s": seconds}

    return fault


def hog_and_burst(chaos: Chaos) -> Callable[[], Awaitable[dict]]:
    async def fault() -> dict:
        started = time.monotonic()
        per_sender = BURST // len(chaos.bursters)
        await asyncio.wait_for(asyncio.gather(*(chaos.burst(s, per_sender) for s in chaos.bursters)), BURST_TIMEOUT)
        return {"burst_s": round(time.monotonic() - started, 1)}

    return fault


def write_report(rows: list[dict]) -> None:
    """The whole per-phase table as JSON, when CHAOS_REPORT names a file."""
    if os.environ.get("CHAOS_REPORT"):
        with open(os.environ["CHAOS_REPORT"], "w") as report:
            json.dump({"readers": READERS, "steady_senders": STEADY_SENDERS, "phases": rows}, report, indent=2,
                      default=str)


def print_table(rows: list[dict]) -> None:
    head = ("fault", "accepted", "refused (reason)", "unanswered", "lost", "dup", "reord", "ambig", "burst",
            "back s", "refusing s", "readers", "edge gaps/healed/dups", "s")
    print("\n" + " | ".join(head))
    for row in rows:
        refused = ", ".join(f"{k} {v}" for k, v in sorted(row["refused"].items())) or "0"
        health = " ".join(f"{e[-1]}:{h['sequence_gaps']}/{h['sequence_healed']}/{h['duplicates_dropped']}"
                          for e, h in row["edge_health"].items())
        burst = (f"{row['burst_accepted']}/{row['burst_sent']} in {row.get('burst_s', '?')} s" if row["burst_sent"]
                 else "-")
        print(" | ".join(map(str, (row["fault"], row["accepted"], refused, row["unanswered"], row["lost"],
                                   row["duplicated"], row["reordered"], row["ambiguous"], burst,
                                   row.get("restart_s", "-"), row["refusing_s"], row["readers_checked"], health,
                                   row["seconds"]))))
        for kind, found in row["examples"].items():
            print(f"    {kind}: {found}")


# ---- the checks themselves, on made-up deliveries: each kind of harm is counted
def _tally(a: list[str], b: list[str], outcomes: dict[str, str], burst: tuple | None = None) -> dict:
    """Two stayed readers of #c see `a` and `b`; each steady text was told `outcomes`; a burst
    group (texts, accepted count[, unanswered count]) is optional."""
    chaos = Chaos(type("Stub", (), {"edge_addresses": staticmethod(lambda edge: (0, 0))})())
    chaos.phase = 1
    for text, outcome in outcomes.items():
        login, n = text.split()
        chaos.sent[text.encode()] = Sent(login, int(n), b"#c", 1, outcome)
    if burst is not None:
        texts, accepted, unanswered = (*burst, 0)[:3]
        group = chaos.bursts[("b", b"#c", 1)] = BurstGroup(1, {t.encode() for t in texts},
                                                           Counter(accepted=accepted, unanswered=unanswered))
        chaos.burst_of.update((text, group) for text in group.texts)
    readers = {}
    for index, seen in enumerate((a, b)):
        reader = Reader(chaos, index, [b"#c"], 0, "tcp")
        readers[reader.login] = (reader, {b"#c": [t.encode() for t in seen]})
    return chaos.analyse(readers, set(readers), time.monotonic())


OK = {"x 1": "accepted", "x 2": "accepted", "y 1": "accepted"}


@pytest.mark.parametrize(("a", "b", "outcomes", "burst", "harm"), [
    (["x 1", "y 1", "x 2"], ["x 1", "y 1", "x 2"], OK, None, {}),
    (["x 1", "y 1", "x 2"], ["x 1", "x 2"], OK, None, {"lost": 1}),
    (["x 1", "y 1", "x 2"], ["x 1", "y 1", "y 1", "x 2"], OK, None, {"duplicated": 1}),
    (["x 2", "y 1", "x 1"], ["x 2", "y 1", "x 1"], OK, None, {"reordered": 2}),  # x's 1 after its 2, both readers
    (["x 1", "y 1", "x 2"], ["y 1", "x 1", "x 2"], OK, None, {"reordered": 2}),  # readers disagree
    (["x 1", "y 1", "x 2"], ["x 1", "y 1", "x 2"], {**OK, "y 1": "msg_banned"}, None, {"ambiguous": 1}),
    (["x 1"], ["x 1"], {"x 1": "accepted", "x 2": "accepted"}, None, {"lost": 2, "ambiguous": 1}),
    (["x 1", "x 2"], ["x 1", "x 2"], {"x 1": "accepted", "x 2": "unanswered"}, None, {}),
    (["x 1"], ["x 1"], {"x 1": "accepted", "x 2": "silent"}, None, {"ambiguous": 1}),
    (["b 1", "b 2"], ["b 1", "b 2"], {}, ({"b 1", "b 2", "b 3"}, 2), {}),
    (["b 1", "b 2"], ["b 1", "b 2"], {}, ({"b 1", "b 2", "b 3"}, 3), {"ambiguous": 1}),
    (["b 1", "b 2"], ["b 1"], {}, ({"b 1", "b 2", "b 3"}, 2), {"lost": 1}),
    (["b 1", "b 2"], ["b 1", "b 2"], {}, ({"b 1", "b 2", "b 3"}, 1), {"ambiguous": 1}),
    (["b 1", "b 2"], ["b 1", "b 2"], {}, ({"b 1", "b 2", "b 3"}, 1, 1), {}),  # one unanswered went through
])
def test_the_chaos_checks_count_lost_duplicated_reordered_and_ambiguous_messages(a, b, outcomes, burst, harm):
    row = _tally(a, b, outcomes, burst)
    found = {kind: row[kind] for kind in ("lost", "duplicated", "reordered", "ambiguous") if row[kind]}
    assert found == harm, row["examples"]


SETUP = (f"2 edges, 2 clues, 2 exchanges, 3 Redis shards under `chatd up` supervision; {READERS} anonymous "
         f"readers, half TCP, half WebSocket, on both edges; {STEADY_SENDERS} senders at ~160 messages/s")
# What users see, beside the counts measured.
NOTES = {
    "none (baseline)": "nothing: no fault",
    "SIGKILL redis-1": "senders whose keys live on that shard are refused (fail closed); the others chat on",
    "SIGKILL exchange-0": "messages to the channels it owns are refused while it is down; the rest go on",
    "SIGKILL clue-0": "nothing: its users' messages go to the other clue",
    "SIGKILL edge-1": "its clients are cut off and reconnect, half to edge-0, half to edge-1 once it is back",
    "SIGSTOP edge-0 for 3 s": "its clients stay connected and hear nothing for 3 s, then everything, in order",
    f"CPU hog + {BURST:,}-message burst": "a busy-looping process takes a core while 12,000 messages come at once",
}


def record(reliability, row: dict) -> None:
    """One row of docs/reliability.md (through RELIABILITY_REPORT) for a phase."""
    refused = ", ".join(f"{v} {k}" for k, v in sorted(row["refused"].items()))
    told = f"{NOTES[row['fault']]}. {row['accepted']:,} accepted, " + (
        f"{sum(row['refused'].values())} refused ({refused})" if refused else "0 refused")
    if row["unanswered"]:
        told += f", {row['unanswered']} unanswered (sent just as the sender's edge died)"
    recovery = []
    if "restart_s" in row:
        recovery.append(f"back in {row['restart_s']} s under supervision")
    if row["readers_reconnected"]:
        recovery.append(f"its {row['readers_reconnected']} readers and its senders all back {row['clients_back_s']} s "
                        "after the kill")
    recovery.append(f"refused until {row['refusing_s']} s after the fault" if row["refusing_s"] else "no refusals")
    if row["burst_sent"]:
        recovery.append(f"burst: {row['burst_share']:.1%} of {row['burst_sent']:,} accepted in {row['burst_s']} s")
    case = f"Chaos test: {row['fault']}" + (f" ({SETUP})" if row["fault"] == "none (baseline)" else "")
    reliability(case, told, "; ".join(recovery),
                f"{row['lost']} lost, {row['duplicated']} duplicated, {row['reordered']} reordered, "
                f"{row['ambiguous']} ambiguous, over the {row['readers_checked']} readers that stayed connected")


@pytest.mark.timeout(300)
@pytest.mark.asyncio
async def test_chaos_every_component_kind_killed_frozen_or_starved_loses_duplicates_reorders_nothing(
        tmp_path, reliability):
    started = time.monotonic()
    setup_s = 0.0
    async with running_cluster(tmp_path, edges=2, clues=2, exchanges=2, shards=3, supervise=True,
                               env=ENV) as cluster:
        chaos = Chaos(cluster)
        hog: asyncio.subprocess.Process | None = None
        rows: list[dict] = []
        try:
            await chaos.start()
            await chaos.barrier()  # everyone in place; the warm-up's deliveries are not counted
            for reader in chaos.readers:
                reader.take()
            setup_s = time.monotonic() - started
            rows.append(await chaos.run_phase("none (baseline)", lambda: asyncio.sleep(0, {})))
            for name in ("redis-1", "exchange-0", "clue-0", "edge-1"):
                rows.append(await chaos.run_phase(f"SIGKILL {name}", kill_and_wait(chaos, name)))
            rows.append(await chaos.run_phase("SIGSTOP edge-0 for 3 s", freeze(chaos, "edge-0", 3.0)))
            hog = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass",
                                                       preexec_fn=die_with_parent)
            rows.append(await chaos.run_phase(f"CPU hog + {BURST:,}-message burst", hog_and_burst(chaos)))
        finally:
            if hog is not None:
                hog.kill()
                await hog.wait()
            cluster.kill("edge-0", signal.SIGCONT)
            await chaos.stop()
            if rows:
                print_table(rows)
                print(f"setup {setup_s:.1f} s, total {time.monotonic() - started:.1f} s")
                write_report(rows)

    for row in rows:
        record(reliability, row)
    assert len(rows) == 7
    for row in rows:
        assert (row["lost"], row["duplicated"], row["reordered"], row["ambiguous"]) == (0, 0, 0, 0), (
            row["fault"], row["examples"])
    burst = rows[-1]
    assert burst["burst_share"] >= 0.99, burst
