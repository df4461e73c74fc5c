"""`chatd edge --workers N`: N edge processes behind the same public ports, one host.

One edge process uses one core. With EDGE_WORKERS=N this process becomes their
parent: it holds the IRC, WebSocket (and TLS) ports, then starts N workers
(`python -m edge` with EDGE_WORKER=i) that each listen on them with SO_REUSEPORT,
so the kernel spreads new connections over the workers. Each worker is a whole
edge towards clue and the exchange: its own EDGE_ID (`<id>-w<i>`), its own
internal HTTP endpoint on a port of its own (the exchange delivers to each one
separately), its own connections, EventSub sessions, limits and gauges.

The parent holds no client. It starts again a worker that exits (with
common/processes.py's growing delays, as `chatd up` restarts components), stops
them all on SIGTERM — each drains its own clients: RECONNECT on IRC,
`session_reconnect` on EventSub, whose `reconnect_url` is the shared port, where
the workers still listening take the sessions over — and answers `GET /health`
for the host on EDGE_HTTP_LISTEN, with every worker's own health in it.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import structlog
from aiohttp import web

from common.internal_http import InternalServer, reply, url_host
from common.metrics import Metrics
from common.processes import RestartBackoff, die_with_parent, exit_status
from common.service_runner import StartFailed
from common.tasks import cancel_and_wait
from edge.config import EdgeSettings

log = structlog.get_logger()

START_TIMEOUT = 20.0  # s for a worker to say it is listening
STOP_MARGIN = 3.0  # s past EDGE_DRAIN_TIMEOUT before a worker that is still draining is killed
HEALTH_TIMEOUT = 1.0  # s for each worker's /health, asked by the host's
# The setting behind each public listener, as the edge names its addresses.
PUBLIC = {"irc": "EDGE_IRC_LISTEN", "ws": "EDGE_WS_LISTEN", "ircs": "EDGE_IRC_TLS_LISTEN", "wss": "EDGE_WSS_LISTEN"}


def bind_hosts(host: str) -> list[str]:
    """The addresses an edge binds for `host`: "localhost" is IPv4 and, where there is one, IPv6."""
    return ["127.0.0.1", "::1"] if host == "localhost" else [host]


def _socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds it
    return sock


def reserve(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Hold `host:port` for the workers, through their restarts: sockets bound with
    SO_REUSEPORT that never listen, so the kernel hands them no connection. A bind
    without SO_REUSEPORT comes first: it fails when anyone listens there already
    (another edge's workers included), where SO_REUSEPORT alone would quietly share."""
    held: list[socket.socket] = []
    try:
        for number, address in enumerate(bind_hosts(host)):
            try:
                with _socket(address) as probe:
                    probe.bind((address, port))
                    port = probe.getsockname()[1]
                sock = _socket(address)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((address, port))
            except OSError:
                if number == 0:  # the optional ::1 of "localhost" may be missing
                    raise
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return port, held


@dataclass
class Worker:
    index: int
    edge_id: str
    process: asyncio.subprocess.Process | None = None
    http: str = ""  # its internal endpoint, from its `listening` line
    restarts: int = 0
    listening: asyncio.Future[dict[str, str]] | None = None
    pump: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


@dataclass
class Workers:
    """The parent of an edge's workers: what `chatd edge` runs with EDGE_WORKERS above 1."""

    settings: EdgeSettings
    metrics: Metrics
    addresses: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    _env: dict[str, str] = field(default_factory=dict)  # what every worker gets beside the parent's environment
    _held: list[socket.socket] = field(default_factory=list)
    _keepers: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False
    _http: aiohttp.ClientSession | None = None
    _server: InternalServer | None = None

    # ---- lifecycle (common.service_runner.Service)
    async def start(self) -> None:
        settings = self.settings
        listeners = {"irc": settings.irc_listen, "ws": settings.ws_listen}
        if settings.tls_cert:
            listeners |= {"ircs": settings.irc_tls_listen, "wss": settings.wss_listen}
        for kind, (host, port) in listeners.items():
            port, held = reserve(host, port)
            self._held += held
            self._env[PUBLIC[kind]] = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            self.addresses[kind] = f"{kind}://{url_host(host)}:{port}"  # as each worker names it
        # Each worker's own internal endpoint, on a port of its own, for the exchange to deliver to.
        http_host = settings.http_listen[0]
        self._env["EDGE_HTTP_LISTEN"] = f"{http_host}:0" if ":" not in http_host else f"[{http_host}]:0"

        self.workers = [Worker(i, f"{settings.edge_id}-w{i}") for i in range(settings.workers)]
        started = await asyncio.gather(*(self._start(worker) for worker in self.workers), return_exceptions=True)
        failed = [str(error) for error in started if isinstance(error, BaseException)]
        if failed:
            raise StartFailed(failed[0])
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT))
        self._server = InternalServer(settings.common.internal_token, [web.get("/health", self._on_health)])
        self.addresses["http"] = await self._server.start(settings.http_listen)
        self.addresses["workers"] = str(len(self.workers))
        self.metrics.gauge_from("workers", lambda: sum(worker.running for worker in self.workers))
        self._keepers = [asyncio.get_running_loop().create_task(self._keep_running(worker))
                         for worker in self.workers]

    async def stop(self) -> None:
        """Every worker drains its own clients at once; one that takes too long is killed."""
        self._stopping = True
        for keeper in self._keepers:
            await cancel_and_wait(keeper)
        running = [worker for worker in self.workers if worker.running]
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        for worker in running:
            assert worker.process is not None
            try:
                await asyncio.wait_for(worker.process.wait(), self.settings.drain_timeout + STOP_MARGIN)
            except TimeoutError:
                log.warning("worker_killed", worker=worker.edge_id, reason="still draining")
                worker.process.kill()
                await worker.process.wait()
        for worker in self.workers:
            if worker.pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker.pump, 2)
        if self._server is not None:
            await self._server.stop()
        if self._http is not None:
            await self._http.close()
        for sock in self._held:
            sock.close()

    # ---- workers
    async def _start(self, worker: Worker) -> None:
        """Start `worker` and wait until it listens; StartFailed if it does not."""
        env = os.environ | self._env | {"EDGE_WORKER": str(worker.index), "EDGE_ID": worker.edge_id}
        loop = asyncio.get_running_loop()
        # stderr is shared: a worker's one-line start-up error reaches whoever runs the edge.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            env=env, preexec_fn=die_with_parent)
        worker.process, worker.http = process, ""
        worker.listening = loop.create_future()
        worker.pump = loop.create_task(self._pump(worker, process, worker.listening))
        try:
            addresses = await asyncio.wait_for(asyncio.shield(worker.listening), START_TIMEOUT)
        except TimeoutError:
            process.kill()
            raise StartFailed(f"worker {worker.edge_id} did not start within {START_TIMEOUT:g} s") from None
        if not addresses:
            raise StartFailed(f"worker {worker.edge_id} exited ({exit_status(await process.wait())})")
        worker.http = addresses.get("http", "")
        log.info("worker_started", worker=worker.edge_id, pid=process.pid, http=worker.http)

    async def _pump(self, worker: Worker, process: asyncio.subprocess.Process,
                    listening: asyncio.Future[dict[str, str]]) -> None:
        """A worker's log lines go out on the parent's stdout, but its `listening` line:
        the parent's own says where the edge listens once every worker does."""
        assert process.stdout is not None
        out = sys.stdout.buffer
        async for line in process.stdout:
            if not listening.done() and b'"listening"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "listening":
                        listening.set_result(event)
                        continue
            out.write(line)
            out.flush()
        if not listening.done():
            listening.set_result({})

    async def _keep_running(self, worker: Worker) -> None:
        """Start `worker` again each time it exits, after a delay that grows while it keeps exiting."""
        backoff = RestartBackoff()
        up_since = time.monotonic()
        while True:
            assert worker.process is not None
            why = exit_status(await worker.process.wait())
            while True:
                now = time.monotonic()
                delay = backoff.next_delay(now, uptime=now - up_since)
                log.warning("worker_exited", worker=worker.edge_id, why=why, restart_in_s=delay,
                            crash_loop=backoff.crash_looping)
                await asyncio.sleep(delay)
                up_since = time.monotonic()
                try:
                    await self._start(worker)
                    break
                except (StartFailed, OSError) as exc:
                    why = str(exc)
            worker.restarts += 1
            self.metrics.incr("workers.restarted")

    # ---- the host's health
    async def _on_health(self, request: web.Request) -> web.Response:
        """Every worker's own /health, and the host's sums: ok while any worker serves."""
        answers = await asyncio.gather(*(self._worker_health(worker) for worker in self.workers))
        up = [answer for answer in answers if answer.get("ok")]
        return reply({
            "ok": bool(up),
            "workers": answers,
            "connections": sum(answer.get("connections", 0) for answer in up),
            "eventsub_sessions": sum(answer.get("eventsub_sessions", 0) for answer in up),
        }, status=200 if up else 503)

    async def _worker_health(self, worker: Worker) -> dict:
        shown = {"worker": worker.index, "edge": worker.edge_id, "http": worker.http, "restarts": worker.restarts,
                 "pid": worker.process.pid if worker.process is not None else None}
        if not worker.running or not worker.http or self._http is None:
            return shown | {"ok": False}
        try:
            async with self._http.get(worker.http + "/health") as response:
                return shown | await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return shown | {"ok": False}
