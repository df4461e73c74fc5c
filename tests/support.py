"""Helpers for tests: a real IRC client over TCP or WebSocket, and a cluster."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import websockets

from chatd.cluster import ClusterConfig, LocalCluster, free_port
from common.irc import Message, parse
from common.metrics import Metrics
from common.shards import ShardSet
from common.tokens import issue_token

DEFAULT_TIMEOUT = 10.0
ALL_CAPS = "twitch.tv/tags twitch.tv/commands twitch.tv/membership"


class IrcClient:
    """A line-oriented client that records everything it receives."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.lines: list[str] = []
        self._cursor = 0
        self._changed = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._send: Callable[[bytes], object] | None = None
        self._close: Callable[[], object] | None = None

    # ---- transports
    @classmethod
    async def tcp_from(cls, address: str, port: int, name: str = "") -> IrcClient:
        """A TCP client whose connection comes from `address` (any of 127/8 on loopback)."""
        return await cls.tcp(port, name, local_address=address)

    @classmethod
    async def tcp(cls, port: int, name: str = "", local_address: str | None = None) -> IrcClient:
        client = cls(name)
        local = (local_address, 0) if local_address else None
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)

        async def pump() -> None:
            try:
                while line := await reader.readline():
                    client._received(line.decode("utf-8", "replace").rstrip("\r\n"))
            except (ConnectionError, OSError):
                pass
            finally:
                client.closed.set()
                client._changed.set()

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        async def close() -> None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

        client._send, client._close = send, close
        client._reader_task = asyncio.get_running_loop().create_task(pump())
        return client

    @classmethod
    async def ws(cls, port: int, name: str = "", subprotocols: list[str] | None = None) -> IrcClient:
        client = cls(name)
        socket = await websockets.connect(
            f"ws://127.0.0.1:{port}", subprotocols=subprotocols if subprotocols is not None else ["irc"]
        )
        client.subprotocol = socket.subprotocol

        async def pump() -> None:
            try:
                async for frame in socket:
                    text = frame if isinstance(frame, str) else frame.decode()
                    for line in text.split("\r\n"):
                        if line:
                            client._received(line)
            except websockets.ConnectionClosed:
                pass
            finally:
                client.closed.set()
                client._changed.set()

        async def send(data: bytes) -> None:
            await socket.send(data.decode())

        async def close() -> None:
            await socket.close()

        client._send, client._close = send, close
        client._reader_task = asyncio.get_running_loop().create_task(pump())
        return client

    def _received(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    # ---- use
    async def send(self, *lines: str) -> None:
        assert self._send is not None
        await self._send("".join(line + "\r\n" for line in lines).encode())

    async def send_raw(self, data: bytes) -> None:
        assert self._send is not None
        await self._send(data)

    async def expect(self, pattern: str | Callable[[str], bool], timeout: float = DEFAULT_TIMEOUT) -> str:
        """The next unread line matching `pattern` (a regex or a predicate)."""
        match = (lambda line: re.search(pattern, line) is not None) if isinstance(pattern, str) else pattern
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if match(line):
                    return line
            if self.closed.is_set():
                raise AssertionError(f"{self.name}: connection closed waiting for {pattern!r}; got {self.lines[-8:]}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout}s; got {self.lines[-8:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for(self, done: Callable[[list[str]], bool], timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until `done(every line received so far)` holds, whatever order lines came in."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self.lines):
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed.is_set():
                raise AssertionError(f"{self.name}: condition not met within {timeout}s; got {self.lines[-8:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def expect_message(self, command: str, text: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Message:
        def match(line: str) -> bool:
            message = parse(line)
            return message.command == command and (text is None or (message.params and message.params[-1] == text))

        return parse(await self.expect(match, timeout))

    def texts(self, channel: str | None = None) -> list[str]:
        """The text of every PRIVMSG received so far (in `channel`), in order."""
        return [m.params[-1] for m in self.received("PRIVMSG") if channel is None or m.params[0] == channel]

    async def wait_for_texts(self, wanted: set[str] | int, channel: str | None = None,
                             timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """Wait until every text in `wanted` (or that many texts) has arrived, in any order."""
        def done() -> bool:
            texts = self.texts(channel)
            return len(texts) >= wanted if isinstance(wanted, int) else wanted <= set(texts)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed.is_set():
                raise AssertionError(f"{self.name}: still waiting for messages; got {self.texts(channel)[-8:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.texts(channel)

    def received(self, command: str) -> list[Message]:
        return [message for message in map(parse, self.lines) if message.command == command]

    async def register(self, nick: str, token: str | None = None, caps: str = ALL_CAPS) -> None:
        lines = []
        if caps:
            lines.append(f"CAP REQ :{caps}")
        if token is not None:
            lines.append(f"PASS oauth:{token}")
        lines.append(f"NICK {nick}")
        await self.send(*lines)
        await self.expect(r" 376 ")

    async def join(self, channel: str) -> None:
        await self.send(f"JOIN {channel}")
        await self.expect(rf" 366 \S+ {re.escape(channel)} ")

    async def ping_roundtrip(self, token: str = "alive") -> None:
        """Proves the connection still works: PING gets its PONG."""
        await self.send(f"PING :{token}")
        await self.expect(rf"PONG \S+ :{token}$")

    async def close(self) -> None:
        if self._close is not None:
            with contextlib.suppress(Exception):
                await self._close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task


class StatsdListener(asyncio.DatagramProtocol):
    """A statsd server: every metric line the services send (set STATSD_PORT to its `port`)."""

    def __init__(self) -> None:
        self.metrics: list[str] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr) -> None:
        self.metrics.extend(data.decode().splitlines())
        self.changed.set()

    async def wait_for(self, names: set[str], timeout: float = 10.0, patterns: tuple[str, ...] = ()) -> None:
        """Until every metric in `names` has come, and one matching each regex in `patterns`
        (services send their metrics in batches of their own, in no set order)."""
        def seen() -> bool:
            came = {metric.split(":", 1)[0] for metric in self.metrics}
            return names <= came and all(any(re.fullmatch(pattern, name) for name in came) for pattern in patterns)

        async def seen_all() -> None:
            while not seen():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen_all(), timeout)


class TestCluster(LocalCluster):
    """A local cluster on ephemeral ports with helpers for tests."""

    __test__ = False

    def token(self, login: str, **claims) -> str:
        return issue_token(self.secret, login, **claims)

    async def client(self, login: str, edge: int = 0, transport: str = "tcp", caps: str = ALL_CAPS,
                     channels: tuple[str, ...] = ()) -> IrcClient:
        irc_port, ws_port = self.edge_addresses(edge)
        if transport == "tcp":
            client = await IrcClient.tcp(irc_port, name=f"{login}@edge{edge}")
        else:
            client = await IrcClient.ws(ws_port, name=f"{login}@edge{edge}/ws")
        token = None if login.startswith("justinfan") else self.token(login)
        await client.register(login, token, caps)
        for channel in channels:
            await client.join(channel)
        self._clients.append(client)
        return client

    async def stop(self) -> None:
        for client in getattr(self, "_clients", []):
            await client.close()
        await super().stop()


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, **options):
    # Tests send bursts into one channel; those about the 1 s channel floor turn it back on.
    env = {"CHANNEL_FLOOR": "0"} | options.pop("env", {})
    ports = {"irc_port": 0, "ws_port": 0, "redis_port": 0} | {k: options.pop(k) for k in ("irc_port", "ws_port",
                                                                                        "redis_port") if k in options}
    config = ClusterConfig(data_dir=tmp_path / "chatd", env=env, **ports, **options)
    cluster = TestCluster(config)
    cluster._clients = []
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


JS_DIR = Path(__file__).parent / "js"


class NodeClient:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict] = []

    @classmethod
    async def start(cls, script: str, *args: str, env: dict[str, str] | None = None) -> NodeClient:
        node = shutil.which("node")
        assert node, "node is required for the client tests (see .ci/run)"
        process = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / script), *args, cwd=JS_DIR, env=os.environ | (env or {}),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def expect(self, predicate, timeout: float = 15.0) -> dict:
        for event in self.events:
            if predicate(event):
                return event

        async def read() -> dict:
            assert self.process.stdout is not None
            while line := await self.process.stdout.readline():
                event = json.loads(line)
                self.events.append(event)
                if predicate(event):
                    return event
            raise AssertionError(f"client exited; events: {self.events}")

        return await asyncio.wait_for(read(), timeout)

    async def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@contextlib.asynccontextmanager
async def redis_shards(tmp_path, count: int = 2):
    """Real Redis shards alone (no chatd process), as a ShardSet over them."""
    cluster = LocalCluster(ClusterConfig(data_dir=tmp_path / "redis", shards=count))
    (tmp_path / "redis" / "logs").mkdir(parents=True, exist_ok=True)
    try:
        for index in range(count):
            await cluster.start_redis(index, free_port())
        shards = ShardSet([(a.split(":")[0], int(a.split(":")[1])) for a in cluster.redis_addresses], 4, 5.0,
                          Metrics("127.0.0.1", 8125, "chatd", "test"))
        yield shards
        await shards.close()
    finally:
        await cluster.stop()
