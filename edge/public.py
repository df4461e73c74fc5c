"""The public HTTP surface of an edge's WebSocket port (SPEC §7).

IRC over WebSocket keeps `/`; everything else a browser or a bot asks for is an
aiohttp app: Helix and OAuth in Twitch's layout (`/helix/…`, `/oauth2/…`) and in
the Twitch CLI's mock layout (`/mock/…`, `/auth/…`, `/eventsub/subscriptions`),
EventSub over WebSocket at `/ws`, and chatd's own `/api/v1/…`. API calls are
forwarded, as they came, to a clue over this edge's keepalive pool; the edge
only hosts what must stay connected (EventSub sessions). A browser's plain GET
of `/` gets the chat page, its files come from `/assets/` (the `web` package),
and the operator console lives at `/console` (edge/console.py).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from common.internal_http import json_error
from web import ASSETS, ASSETS_PATH

# Headers a forwarded call keeps, both ways.
REQUEST_HEADERS = ("Authorization", "Client-Id", "Content-Type")
RESPONSE_HEADERS = ("Content-Type", "Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset")
MAX_BODY = 1024 * 1024

Forward = Callable[[str, str, str, dict[str, str], bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


# recent-messages is read by browser clients from any origin, as robotty's service is.
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": "*"}


@web.middleware
async def open_cors(request: web.Request, handler):
    response = await handler(request)
    if request.path.startswith("/api/v2/"):
        response.headers.update(CORS)
    return response


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


def public_app(forward: Forward, eventsub: Callable[[web.Request], Awaitable[web.StreamResponse]],
               index: Callable[[web.Request], Awaitable[web.StreamResponse]],
               more: list[web.RouteDef] = ()) -> web.Application:
    """The app; `forward(method, path, query, headers, body)` reaches a clue; `more`: the console's routes."""

    def to(prefix: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            path = prefix + request.match_info.get("tail", "")
            headers = {name: request.headers[name] for name in REQUEST_HEADERS if name in request.headers}
            try:
                body = await request.read() if request.can_read_body else b""
            except web.HTTPRequestEntityTooLarge:
                return json_error(413, f"The request body is larger than {MAX_BODY} bytes")
            try:
                status, answer_headers, answer = await forward(request.method, path, request.query_string, headers,
                                                               body)
            except (aiohttp.ClientError, TimeoutError, OSError):
                return json_error(503, "the API is unavailable right now; try again")
            kept = {name: value for name, value in answer_headers.items() if name in RESPONSE_HEADERS}
            return web.Response(status=status, body=answer, headers=kept)

        return handler

    app = web.Application(client_max_size=MAX_BODY, middlewares=[open_cors])
    methods = ("GET", "POST", "PUT", "PATCH", "DELETE")
    for method in methods:
        app.router.add_route(method, "/helix/{tail:.*}", to("/helix/"))
        app.router.add_route(method, "/mock/{tail:.*}", to("/helix/"))  # the Twitch CLI's mock-api layout
        app.router.add_route(method, "/eventsub/subscriptions", to("/helix/eventsub/subscriptions"))
        app.router.add_route(method, "/oauth2/{tail:.*}", to("/oauth2/"))
        app.router.add_route(method, "/auth/{tail:.*}", to("/oauth2/"))
        app.router.add_route(method, "/api/v1/{tail:.*}", to("/api/v1/"))
    app.router.add_get("/api/v2/recent-messages/{tail:.*}", to("/api/v2/recent-messages/"))
    app.router.add_route("OPTIONS", "/api/v2/{tail:.*}", preflight)
    app.router.add_get("/ws", eventsub)
    app.router.add_get("/", index)
    app.router.add_static(ASSETS_PATH, ASSETS)
    app.add_routes(more)
    return app
