"""HTTP between chatd services: pooled keepalive clients and token-guarded servers.

Every call names its remote, is bounded by a timeout, is timed in statsd and,
when it fails, leaves one log line saying which remote did what (SPEC §6).
Bodies are the typed messages of `common.wire`; every error answer, ours or a
client's mistake, is one JSON shape (Twitch's: `{"error", "status", "message"}`)
and never a traceback.
"""
from __future__ import annotations

import hmac
import time
from http import HTTPStatus
from typing import Any, TypeVar

import aiohttp
import structlog
from aiohttp import web

from common import wire
from common.metrics import Metrics

log = structlog.get_logger()
T = TypeVar("T")

AUTH_HEADER = "Authorization"
# Internal requests carry at most one batch; the exchange splits what it sends well under this.
MAX_BODY = 16 * 1024 * 1024


class RemoteError(Exception):
    """A call to another chatd service failed (timeout, refused, non-2xx)."""

    def __init__(self, remote: str, op: str, reason: str, refused: bool = False, status: int | None = None) -> None:
        super().__init__(f"{remote} {op}: {reason}")
        self.remote = remote
        self.op = op
        self.reason = reason
        # The remote never got the request (connection refused): safe to send elsewhere.
        self.refused = refused
        # The remote answered with this HTTP status: it did get the request.
        self.status = status


class ApiError(Exception):
    """Raised by a handler: answered as a JSON error with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict[str, Any]:
    """Twitch's error shape, used by every chatd HTTP API."""
    return {"error": HTTPStatus(status).phrase, "status": status, "message": message}


def json_error(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


def reply(message: Any, status: int = 200) -> web.Response:
    """A typed message (or plain JSON data) as the response body."""
    return web.Response(body=wire.encode(message), status=status, content_type="application/json")


async def read_body(request: web.Request, kind: type[T]) -> T:
    """The request body decoded as `kind`, or a 400 saying what is wrong with it."""
    try:
        return wire.decode(await request.read(), kind)
    except wire.DecodeError as exc:
        raise ApiError(400, f"malformed body: {exc}") from None


# Paths outside the internal-token guard: health checks, and public APIs whose
# handlers check users' own bearer tokens (edges forward them from clients).
OPEN_PATHS = frozenset({"/health"})
PUBLIC_PREFIXES = ("/api/", "/oauth2/", "/helix/")


def errors_middleware():
    """Every failure becomes a JSON error; a bug is logged once, never shown."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        try:
            return await handler(request)
        except ApiError as exc:
            return json_error(exc.status, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_error(exc.status, exc.reason)
        except Exception:
            log.exception("internal_error", path=request.path, method=request.method)
            return json_error(500, "internal error")

    return middleware


def internal_auth_middleware(token: str):
    """Refuse any request without `Authorization: Bearer <CHAT_INTERNAL_TOKEN>`."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path not in OPEN_PATHS and not request.path.startswith(PUBLIC_PREFIXES):
            given = request.headers.get(AUTH_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                return json_error(401, "missing or wrong internal token")
        return await handler(request)

    return middleware


def metrics_route(metrics: Metrics) -> web.RouteDef:
    """`GET /v1/metrics?since=<ms>`: the samples this process kept (common.metrics), for the console."""

    async def handler(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise ApiError(400, "since must be milliseconds since the epoch") from None
        return reply(wire.MetricsReply(metrics.service, metrics.since(since)))

    return web.get("/v1/metrics", handler)


class InternalClient:
    """A keepalive connection pool to one remote service."""

    def __init__(
        self,
        remote: str,
        base_url: str,
        token: str,
        metrics: Metrics,
        *,
        timeout: float,
        max_conns: int = 8,
    ) -> None:
        self.remote = remote
        self.base_url = base_url.rstrip("/")
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {AUTH_HEADER: f"Bearer {token}", "Content-Type": "application/json"}
        self._connector = aiohttp.TCPConnector(limit=max_conns, keepalive_timeout=60.0)
        self._session = aiohttp.ClientSession(
            connector=self._connector, timeout=self._timeout, skip_auto_headers=("User-Agent",)
        )
        self.metric_name = remote.replace(".", "_").replace(":", "_")
        metrics.gauge_from(f"http.{self.metric_name}.pool_in_use", self.connections_in_use)

    def connections_in_use(self) -> int:
        acquired = getattr(self._connector, "_acquired", ())
        return len(acquired)

    async def post(self, path: str, message: Any, op: str, answer: type[T], *, timeout: float | None = None) -> T:
        """POST a typed message (or pre-encoded JSON bytes); the answer decoded as `answer`."""
        body = message if isinstance(message, bytes) else wire.encode(message)
        return await self._request("POST", path, body, op, answer, timeout)

    async def forward(self, method: str, path_and_query: str, headers: dict[str, str], body: bytes
                      ) -> tuple[int, dict[str, str], bytes]:
        """A public API call passed through as it is (the caller's own Authorization
        header, not the internal token): its status, headers and body."""
        started = time.perf_counter()
        async with self._session.request(method, self.base_url + path_and_query, data=body or None,
                                         headers=headers) as response:
            answer = await response.read()
            self._metrics.timing(f"http.{self.metric_name}.forward", (time.perf_counter() - started) * 1000)
            return response.status, dict(response.headers), answer

    async def get(self, path: str, op: str, answer: type[T]) -> T:
        return await self._request("GET", path, None, op, answer, None)

    async def _request(self, method: str, path: str, body: bytes | None, op: str, answer: type[T],
                       timeout: float | None) -> T:
        started = time.perf_counter()
        options = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
        try:
            async with self._session.request(
                method, self.base_url + path, data=body, headers=self._headers, **options
            ) as response:
                data = await response.read()
                if response.status >= 400:
                    raise RemoteError(self.remote, op, f"HTTP {response.status}: {data[:200]!r}",
                                      status=response.status)
                result = wire.decode(data, answer)
        except RemoteError as exc:
            self._failed(op, exc.reason, started)
            raise
        except TimeoutError:
            self._failed(op, "timeout", started)
            raise RemoteError(self.remote, op, "timeout") from None
        except (aiohttp.ClientError, OSError, *wire.DecodeError) as exc:
            reason = type(exc).__name__
            self._failed(op, reason, started, detail=str(exc)[:200])
            raise RemoteError(self.remote, op, reason, refused=isinstance(exc, aiohttp.ClientConnectorError)) from None
        self._metrics.timing(f"http.{self.metric_name}.{op}", (time.perf_counter() - started) * 1000)
        return result

    def _failed(self, op: str, reason: str, started: float, detail: str = "") -> None:
        after_ms = round((time.perf_counter() - started) * 1000)
        self._metrics.incr(f"http.{self.metric_name}.{op}.failed")
        log.warning(
            "timeout" if reason == "timeout" else "remote_failed",
            remote=self.remote,
            url=self.base_url,
            op=op,
            after_ms=after_ms,
            reason=reason,
            detail=detail or None,
        )

    async def close(self) -> None:
        await self._session.close()


class InternalServer:
    """An aiohttp app guarded by the internal token, on its own listener."""

    def __init__(self, token: str, routes: list[web.RouteDef], max_body: int = MAX_BODY) -> None:
        app = web.Application(middlewares=[errors_middleware(), internal_auth_middleware(token)],
                              client_max_size=max_body)
        app.add_routes(routes)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def start(self, listen: tuple[str, int]) -> str:
        """Listen on `listen` (port 0: any free port); returns the base URL."""
        await self._runner.setup()
        host, port = listen
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{url_host(host)}:{bound}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()


def url_host(host: str) -> str:
    """A bound host as it should appear in a URL others connect to."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
