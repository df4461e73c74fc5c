"""A fleet of cheap IRC client connections, for load tests and benchmarks.

One fleet process holds up to ~19,000 connections (a process may open 20,000
files) as plain asyncio protocols: no task per connection. Ordinary members
only count the lines they receive (a C-speed `bytes.count`); "probe" members
also parse the benchmark messages to measure send→receive latency and spot
gaps. The parent drives a fleet with JSON lines on stdin and reads JSON lines
on stdout; the first stdin line is its configuration.

Benchmark messages look like `PRIVMSG #chan :b <channel-seq> <send-time-ns>`.
"""
from __future__ import annotations

import abc
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.uri import parse_uri

CONNECT_CONCURRENCY = 200
LATENCY_SAMPLES_MAX = 200_000
REJOIN_DELAY = 1.0  # s (to twice this) before a JOIN the server refused for now is sent again


@dataclass
class FleetConfig:
    host: str
    port: int
    transport: str  # "tcp" or "ws"
    dialect: str  # "twitch" (chatd, anonymous justinfan logins) or "irc" (plain NICK/USER)
    channels: list[str]  # one entry per connection
    caps: str = ""  # CAP REQ sent first when non-empty (twitch dialect)
    probe_every: int = 0  # every Nth connection parses messages (0: none)
    first_index: int = 0  # makes nicks unique across fleet processes
    ready_timeout: float = 120.0
    connect_concurrency: int = CONNECT_CONCURRENCY
    # Connect from this loopback address (any of 127/8): one source address has only the
    # ephemeral range's ports (28,000 here) for connections to one server port.
    local_host: str = ""


@dataclass
class Stats:
    lines: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    gaps: int = 0
    target: int = 0
    reached_at: float = 0.0


class Member(asyncio.Protocol, metaclass=abc.ABCMeta):
    """One client connection; the subclass decides how bytes arrive and leave."""

    def __init__(self, fleet: Fleet, index: int, channel: str, probe: bool) -> None:
        self.fleet = fleet
        self.index = index
        self.channel = channel
        self.probe = probe
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self._partial = b""
        self._tail = b""
        self._last_seq: dict[str, int] = {}

    def registration(self) -> bytes:
        config = self.fleet.config
        nick = f"{'justinfan' if config.dialect == 'twitch' else 'u'}{config.first_index + self.index}"
        lines = []
        if config.dialect == "twitch" and config.caps:
            lines.append(f"CAP REQ :{config.caps}")
        lines.append(f"NICK {nick}")
        if config.dialect == "irc":
            lines.append(f"USER {nick} 0 * :{nick}")
        lines.append(f"JOIN {self.channel}")
        return "".join(line + "\r\n" for line in lines).encode()

    def rejoin(self) -> None:
        if not self.ready.done():
            self.send(f"JOIN {self.channel}\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.open -= 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before joining"))

    def on_bytes(self, data: bytes) -> None:
        stats = self.fleet.stats
        count = data.count(b"\n")
        stats.lines += count
        if stats.target and not stats.reached_at and stats.lines >= stats.target:
            stats.reached_at = time.time()
        if not self.ready.done():
            # The end-of-NAMES numeric may straddle two reads: keep a short tail.
            window = self._tail + data
            if b" 366 " in window:
                self.ready.set_result(None)
            elif b"msg_join_failed" in window:  # the server could not take it now: again, as clients do
                asyncio.get_running_loop().call_later(REJOIN_DELAY * (1 + random.random()), self.rejoin)
                window = b""
            self._tail = window[-8:]
        if b"PING" in data or self.probe:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        now_ns = time.time_ns()
        for line in lines:
            if line.startswith(b"PING"):
                self.send(b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")
            elif self.probe and b" PRIVMSG " in line:
                self._measure(line, now_ns)

    def _measure(self, line: bytes, now_ns: int) -> None:
        head, _, text = line.rstrip(b"\r").partition(b" :b ")
        parts = text.split(b" ")
        if len(parts) < 2 or not parts[0].isdigit():
            return
        stats = self.fleet.stats
        if len(stats.latencies_ms) < LATENCY_SAMPLES_MAX:
            stats.latencies_ms.append((now_ns - int(parts[1])) / 1e6)
        # Each sender numbers its messages per channel: `:sender!… PRIVMSG #chan` is the key.
        stream = head[head.find(b":"):].decode()
        seq = int(parts[0])
        previous = self._last_seq.get(stream)
        if previous is not None and seq > previous + 1:
            stats.gaps += seq - previous - 1
        self._last_seq[stream] = seq

    @abc.abstractmethod
    def send(self, data: bytes) -> None: ...

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpMember(Member):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send(self.registration())

    def data_received(self, data: bytes) -> None:
        self.on_bytes(data)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class WsMember(Member):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        config = self.fleet.config
        self.ws = ClientProtocol(parse_uri(f"ws://{config.host}:{config.port}/"), subprotocols=["irc"])
        self.request = self.ws.connect()
        self.ws.send_request(self.request)
        self._flush()
        self._open = False

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if not self._open:  # the handshake response
                self._open = True
                self.send(self.registration())
            elif event.opcode is Opcode.TEXT:
                self.on_bytes(event.data)
        self._flush()

    def send(self, data: bytes) -> None:
        if self._open:
            self.ws.send_text(data)
            self._flush()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.members: list[Member] = []
        self.open = 0
        self.failed = 0

    async def connect_all(self) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.config.connect_concurrency)
        kind = WsMember if self.config.transport == "ws" else TcpMember
        probe_every = self.config.probe_every
        local = (self.config.local_host, 0) if self.config.local_host else None

        async def one(index: int, channel: str) -> None:
            member = kind(self, index, channel, probe=bool(probe_every) and index % probe_every == 0)
            try:
                # Only the connect is gated: a server that is slow to accept or
                # to answer a JOIN must not hold back the connections behind it.
                async with gate:
                    await loop.create_connection(lambda: member, self.config.host, self.config.port,
                                                 local_addr=local)
                self.open += 1
                await asyncio.wait_for(member.ready, self.config.ready_timeout)
            except (OSError, ConnectionError, TimeoutError):
                self.failed += 1
                member.close()
                return
            self.members.append(member)

        await asyncio.gather(*(one(i, channel) for i, channel in enumerate(self.config.channels)))

    def report(self) -> dict:
        latencies = self.stats.latencies_ms
        return {
            "lines": self.stats.lines,
            "open": self.open,
            "joined": len(self.members),
            "failed": self.failed,
            "gaps": self.stats.gaps,
            "reached_at": self.stats.reached_at,
            "latencies_ms": latencies if len(latencies) <= 20_000 else random.sample(latencies, 20_000),
        }

    def reset(self, target: int = 0) -> None:
        self.stats = Stats(target=target)

    def close(self) -> None:
        for member in self.members:
            member.close()


async def serve(config: FleetConfig) -> None:
    """Fleet process main loop: connect, say ready, then obey stdin commands."""
    fleet = Fleet(config)
    await fleet.connect_all()
    emit({"event": "ready", "joined": len(fleet.members), "failed": fleet.failed})
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "reset":
            fleet.reset(command.get("target", 0))
            emit({"event": "reset"})
        elif command["cmd"] == "report":
            emit({"event": "report", **fleet.report()})
        elif command["cmd"] == "stop":
            break
    fleet.close()


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    import uvloop

    config = FleetConfig(**json.loads(sys.stdin.readline()))
    uvloop.run(serve(config))


if __name__ == "__main__":
    main()


class FleetGroup:
    """Fleet processes started and driven from the benchmark or swarm process."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.joined = 0
        self.failed = 0

    async def start(self, config: FleetConfig, processes: int = 1, local_hosts: list[str] | None = None) -> None:
        """Start `processes` fleet processes sharing the connections; process i connects from
        `local_hosts[i]` when given."""
        per_process = -(-len(config.channels) // processes)
        for number in range(processes):
            chunk = config.channels[number * per_process : (number + 1) * per_process]
            if not chunk:
                continue
            part = FleetConfig(**{**config.__dict__, "channels": chunk,
                                  "first_index": config.first_index + number * per_process,
                                  "local_host": local_hosts[number % len(local_hosts)] if local_hosts
                                  else config.local_host})
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "loadtest.fleet",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
            )
            # The configuration is the first line on stdin: tens of thousands of
            # channel names would not fit in an argument list.
            assert process.stdin is not None
            process.stdin.write(json.dumps(part.__dict__).encode() + b"\n")
            await process.stdin.drain()
            self.processes.append(process)
        for process in self.processes:
            ready = await self._read(process, timeout=config.ready_timeout + 30)
            self.joined += ready["joined"]
            self.failed += ready["failed"]

    async def _read(self, process: asyncio.subprocess.Process, timeout: float = 60.0) -> dict:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"fleet process exited with {await process.wait()}")
        return json.loads(line)

    async def command(self, **command) -> list[dict]:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(json.dumps(command).encode() + b"\n")
            await process.stdin.drain()
        return [await self._read(process) for process in self.processes]

    async def reset(self, target_lines: int = 0) -> None:
        """Zero the counters; each process notes when it has `target_lines` per member."""
        for process, size in zip(self.processes, await self._sizes(), strict=True):
            assert process.stdin is not None
            process.stdin.write(json.dumps({"cmd": "reset", "target": target_lines * size}).encode() + b"\n")
            await process.stdin.drain()
        for process in self.processes:
            await self._read(process)

    async def _sizes(self) -> list[int]:
        return [report["joined"] for report in await self.command(cmd="report")]

    async def report(self) -> dict:
        reports = await self.command(cmd="report")
        return {
            "lines": sum(r["lines"] for r in reports),
            "open": sum(r["open"] for r in reports),
            "joined": sum(r["joined"] for r in reports),
            "gaps": sum(r["gaps"] for r in reports),
            "reached_at": max(r["reached_at"] for r in reports) if all(r["reached_at"] for r in reports) else 0.0,
            "latencies_ms": [value for r in reports for value in r["latencies_ms"]],
        }

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None and process.stdin is not None:
                process.stdin.write(b'{"cmd": "stop"}\n')
                try:
                    await process.stdin.drain()
                except ConnectionError:
                    pass
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
