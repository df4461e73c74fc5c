"""The systems a benchmark runs side by side: chatd, ngircd and the raw ceiling."""
from __future__ import annotations

import abc
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chatd.cluster import ClusterConfig, LocalCluster, free_port
from common.tokens import issue_token

# Benchmarks measure throughput, from one address: no per-user or per-address limits.
BENCH_ENV = {"RATE_LIMIT": "100000000", "RATE_WINDOW": "1s", "JOIN_RATE_LIMIT": "100000",
             "EDGE_MAX_CONNECTIONS_PER_IP": "0", "EDGE_JOIN_RATE_LIMIT": "1000000",
             "CHANNEL_FLOOR": "0"}

NGIRCD_CONF = """\
[Global]
Name = bench.ngircd
Info = chatd benchmark baseline
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = bench
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
"""


async def wait_for_port(port: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if loop.time() > deadline:
            raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")
        await asyncio.sleep(0.05)


class System(abc.ABC):
    name = ""
    dialect = "irc"

    # Nothing to start or stop for a system the harness does not run (ExternalChatd).
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @abc.abstractmethod
    def irc_port(self, edge: int = 0) -> int: ...

    def sender_registration(self, nick: str) -> list[str]:
        return [f"NICK {nick}", f"USER {nick} 0 * :{nick}"]

    def server_pids(self) -> list[int]:
        return []

    def processes(self) -> dict[str, list[int]]:
        """The server's processes by kind (edge, clue, …), for CPU accounting."""
        return {"server": self.server_pids()}


class ChatdSystem(System):
    name = "chatd"
    dialect = "twitch"

    def __init__(self, edges: int = 1, shards: int = 3, env: dict[str, str] | None = None,
                 code: Path | None = None, name: str = "chatd", workers: int = 1) -> None:
        self.name = name
        self._dir = tempfile.TemporaryDirectory(prefix="chatd-bench-")
        self.cluster = LocalCluster(
            ClusterConfig(
                data_dir=Path(self._dir.name), edges=edges, shards=shards, workers=workers,
                irc_port=0, ws_port=0, redis_port=0, env={**BENCH_ENV, **(env or {})}, code=code,
            )
        )

    async def start(self) -> None:
        await self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.stop()
        self._dir.cleanup()

    def irc_port(self, edge: int = 0) -> int:
        return self.cluster.edge_addresses(edge)[0]

    def ws_port(self, edge: int = 0) -> int:
        return self.cluster.edge_addresses(edge)[1]

    def sender_registration(self, nick: str) -> list[str]:
        return [f"PASS oauth:{issue_token(self.cluster.secret, nick)}", f"NICK {nick}"]

    def server_pids(self) -> list[int]:
        return [c.process.pid for name, c in self.cluster.components.items() if name.startswith("edge")]

    def processes(self) -> dict[str, list[int]]:
        """Edges with workers: the workers are `edge`, their parents `edge parent`."""
        kinds: dict[str, list[int]] = {}
        for name, component in self.cluster.components.items():
            kind = name.split("-")[0]
            workers = child_pids(component.process.pid) if kind == "edge" else []
            if workers:
                kinds.setdefault("edge", []).extend(workers)
                kind = "edge parent"
            kinds.setdefault(kind, []).append(component.process.pid)
        return kinds


def child_pids(pid: int) -> list[int]:
    """A process's children (an edge's workers), from /proc."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class _Subprocess(System):
    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def _spawn(self, *argv: str) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await wait_for_port(self.port)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def irc_port(self, edge: int = 0) -> int:
        return self.port

    def server_pids(self) -> list[int]:
        return [self.process.pid] if self.process else []


class NgircdSystem(_Subprocess):
    name = "ngircd"

    async def start(self) -> None:
        binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
        if not Path(binary).exists():
            raise RuntimeError("ngircd is not installed (apt-get install ngircd)")
        self._dir = tempfile.TemporaryDirectory(prefix="ngircd-bench-")
        conf = Path(self._dir.name) / "ngircd.conf"
        conf.write_text(NGIRCD_CONF.format(port=self.port))
        await self._spawn(binary, "--nodaemon", "--config", str(conf))

    async def stop(self) -> None:
        await super().stop()
        self._dir.cleanup()


class RawSystem(_Subprocess):
    name = "raw"

    async def start(self) -> None:
        await self._spawn(sys.executable, "-m", "loadtest.raw_server", str(self.port))


class Sender:
    """One client that writes benchmark messages: `b <channel-seq> <send-time-ns>`."""

    def __init__(self, system: System, nick: str, channels: list[str], edge: int = 0, join: bool = True) -> None:
        self.system = system
        self.nick = nick
        self.channels = channels
        self.edge = edge
        # Twitch relays chat to a channel the sender never joined: a chatter need not
        # receive the channel it talks in (chatd only; IRC servers refuse it).
        self.join = join
        self.seq = dict.fromkeys(channels, 0)

    async def connect(self) -> None:
        host = getattr(self.system, "host", "127.0.0.1")
        self.reader, self.writer = await asyncio.open_connection(host, self.system.irc_port(self.edge))
        lines = self.system.sender_registration(self.nick)
        if self.join:
            lines.append(f"JOIN {','.join(self.channels)}")
        self.writer.write("".join(line + "\r\n" for line in lines).encode())
        said = b""
        while not self.join:
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line:
                raise RuntimeError(f"{self.system.name} closed the sender: registration failed ({said.decode()!r})")
            if b" 376 " in line:
                break
            said = line.strip()
        joined = 0
        while self.join and joined < len(self.channels):
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line:
                raise RuntimeError(f"{self.system.name} closed the sender: registration failed")
            if b"msg_join_ratelimit" in line:
                raise RuntimeError("the server refused the sender's JOINs: raise JOIN_RATE_LIMIT (and RATE_LIMIT)")
            if b" 366 " in line:
                joined += 1
        self._drain_task = asyncio.get_running_loop().create_task(self._discard())

    async def _discard(self) -> None:
        with contextlib.suppress(Exception):
            while await self.reader.read(65536):
                pass

    def write(self, channel: str, count: int = 1) -> None:
        parts = []
        for _ in range(count):
            self.seq[channel] += 1
            parts.append(f"PRIVMSG {channel} :b {self.seq[channel]} {time.time_ns()}\r\n")
        self.writer.write("".join(parts).encode())

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        self._drain_task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class ExternalChatd(System):
    """A chatd edge that is already running (for the swarm generator)."""

    name = "chatd"
    dialect = "twitch"

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host = host
        self.port = port
        self.secret = secret

    def irc_port(self, edge: int = 0) -> int:
        return self.port

    def sender_registration(self, nick: str) -> list[str]:
        return [f"PASS oauth:{issue_token(self.secret, nick)}", f"NICK {nick}"]
