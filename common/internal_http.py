"""HTTP between chatd services: pooled keepalive clients and token-guarded servers.

Every call names its remote, is bounded by a timeout, is timed in statsd and,
when it fails, leaves one log line saying which remote did what (SPEC §6).
"""
from __future__ import annotations

import hmac
import json
import time
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from common.metrics import Metrics

log = structlog.get_logger()

AUTH_HEADER = "Authorization"


class RemoteError(Exception):
    """A call to another chatd service failed (timeout, refused, non-2xx)."""

    def __init__(self, remote: str, op: str, reason: str, refused: bool = False) -> None:
        super().__init__(f"{remote} {op}: {reason}")
        self.remote = remote
        self.op = op
        self.reason = reason
        # The remote never got the request (connection refused): safe to send elsewhere.
        self.refused = refused


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


# Paths outside the internal-token guard: health checks, and the public API
# (clue's moderation API), whose handlers check users' own bearer tokens.
OPEN_PATHS = frozenset({"/health"})
PUBLIC_PREFIX = "/api/"


def internal_auth_middleware(token: str):
    """Refuse any request without `Authorization: Bearer <CHAT_INTERNAL_TOKEN>`."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path not in OPEN_PATHS and not request.path.startswith(PUBLIC_PREFIX):
            given = request.headers.get(AUTH_HEADER, "").encode()
            if not hmac.compare_digest(given, expected):
                return json_error(401, "unauthorized", "missing or wrong internal token")
        return await handler(request)

    return middleware


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or an HTTP 400 with a JSON reason."""
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_json", "message": "body is not JSON"}),
            content_type="application/json",
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_json", "message": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


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
            connector=self._connector,
            timeout=self._timeout,
            json_serialize=json.dumps,
            skip_auto_headers=("User-Agent",),
        )
        self.metric_name = remote.replace(".", "_").replace(":", "_")
        metrics.gauge_from(f"http.{self.metric_name}.pool_in_use", self.connections_in_use)

    def connections_in_use(self) -> int:
        acquired = getattr(self._connector, "_acquired", ())
        return len(acquired)

    async def post(self, path: str, payload: dict | bytes, op: str) -> dict[str, Any]:
        """POST JSON (or pre-encoded JSON bytes) and return the decoded JSON answer."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return await self._request("POST", path, body, op)

    async def get(self, path: str, op: str) -> dict[str, Any]:
        """GET a JSON answer (health checks)."""
        return await self._request("GET", path, None, op)

    async def _request(self, method: str, path: str, body: bytes | None, op: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, self.base_url + path, data=body, headers=self._headers
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise RemoteError(self.remote, op, f"HTTP {response.status}: {text[:200]}")
                answer = json.loads(text) if text else {}
        except RemoteError as exc:
            self._failed(op, exc.reason, started)
            raise
        except TimeoutError:
            self._failed(op, "timeout", started)
            raise RemoteError(self.remote, op, "timeout") from None
        except (aiohttp.ClientError, OSError, json.JSONDecodeError) as exc:
            reason = type(exc).__name__
            self._failed(op, reason, started, detail=str(exc)[:200])
            raise RemoteError(self.remote, op, reason, refused=isinstance(exc, aiohttp.ClientConnectorError)) from None
        self._metrics.timing(f"http.{self.metric_name}.{op}", (time.perf_counter() - started) * 1000)
        return answer

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

    def __init__(self, token: str, routes: list[web.RouteDef], max_body: int = 16 * 1024 * 1024) -> None:
        app = web.Application(middlewares=[internal_auth_middleware(token)], client_max_size=max_body)
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
