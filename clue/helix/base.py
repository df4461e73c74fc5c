"""What every Helix endpoint shares: the caller's token and scopes, Twitch's
error body, rate-limit headers, pagination, and ids read as users and channels."""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from clue.accounts import Accounts
from clue.channels import ChannelCache, ChannelState
from clue.oauth import OAuth, OAuthError
from common import scopes, twitch
from common.shards import ShardSet, ShardUnavailable, pipeline_call
from common.tokens import APP, USER, Grant

# Twitch's bucket: 800 points a minute per client and user.
RATE_LIMIT = 800
RATE_WINDOW = 60
MAX_PAGE = 100


class HelixError(Exception):
    """Answered as Twitch's `{"error", "status", "message"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": HTTPStatus(status).phrase, "status": status, "message": message}
    return web.json_response(body, status=status, headers=headers)


@dataclass(slots=True)
class Call:
    """One authenticated Helix request."""

    request: web.Request
    grant: Grant
    headers: dict[str, str]  # rate-limit headers for the answer

    @property
    def user_id(self) -> str | None:
        return self.grant.identity.user_id if self.grant.identity else None

    def param(self, name: str, required: bool = True) -> str:
        value = self.request.query.get(name, "")
        if required and not value:
            raise HelixError(400, f"Missing required parameter \"{name}\"")
        return value

    def params(self, name: str) -> list[str]:
        return self.request.query.getall(name, [])

    async def body(self) -> dict[str, Any]:
        if not self.request.can_read_body:
            return {}
        try:
            data = json.loads(await self.request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise HelixError(400, "The request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HelixError(400, "The request body must be a JSON object")
        return data

    def require_user(self, user_id: str, field: str) -> None:
        """The token must belong to the user `field` names."""
        if self.user_id != user_id:
            raise HelixError(401, f"The ID in {field} must match the user ID found in the request's OAuth token.")

    def json(self, data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status, headers=self.headers)

    def empty(self) -> web.Response:
        return web.Response(status=204, headers=self.headers)


Handler = Callable[[Call], Awaitable[web.Response]]


class HelixBase:
    def __init__(self, oauth: OAuth, accounts: Accounts, channels: ChannelCache, shards: ShardSet) -> None:
        self.oauth = oauth
        self.accounts = accounts
        self.channels = channels
        self.shards = shards

    def endpoint(self, handler: Handler, *, scopes_all: tuple[str, ...] = (), scopes_any: tuple[str, ...] = (),
                 tokens: tuple[str, ...] = (USER, APP)) -> Callable[[web.Request], Awaitable[web.Response]]:
        """An aiohttp handler: authenticate, check scopes, count the rate, run, answer errors Twitch's way."""

        async def handle(request: web.Request) -> web.Response:
            try:
                call = await self._authenticate(request, tokens, scopes_all, scopes_any)
            except HelixError as exc:
                return error_response(exc.status, exc.message, getattr(exc, "headers", None))
            try:
                return await handler(call)
            except HelixError as exc:
                return error_response(exc.status, exc.message, call.headers)
            except ShardUnavailable:
                return error_response(503, "chat state is unavailable; try again", call.headers)

        return handle

    async def _authenticate(self, request: web.Request, kinds: tuple[str, ...], scopes_all: tuple[str, ...],
                            scopes_any: tuple[str, ...]) -> Call:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HelixError(401, "OAuth token is missing")
        try:
            grant = await self.oauth.authenticate(token, kinds)
        except OAuthError:
            raise HelixError(401, "Invalid OAuth token") from None
        client_id = request.headers.get("Client-Id")
        if client_id is not None and client_id != grant.client_id:
            raise HelixError(401, "Client ID and OAuth token do not match")
        # An app token holds no user's scopes: what it may do for a user is what
        # that user granted its client (app_acts_for, in the endpoints that allow it).
        if grant.kind == USER and scopes_all and not grant.has(*scopes_all):
            raise HelixError(401, f"Missing scope: {' '.join(scopes_all)}")
        if grant.kind == USER and scopes_any and not any(grant.has(scope) for scope in scopes_any):
            raise HelixError(401, f"Missing scope: one of {' '.join(scopes_any)}")
        headers = await self._rate(grant)
        return Call(request, grant, headers)

    async def app_acts_for(self, call: Call, user_id: str, user_scopes: tuple[str, ...], broadcaster_id: str,
                           moderator: bool) -> None:
        """An app token acts for a user only as far as the user authorized its
        client: the user's scopes and, in someone else's channel, `user:bot` from
        the user and `channel:bot` from the broadcaster (or the user moderates
        there), as on Twitch."""
        client_id = call.grant.client_id
        granted = await self.accounts.granted(user_id, client_id)
        needed = user_scopes + (("user:bot",) if user_id != broadcaster_id else ())
        missing = [name for name in needed if not granted & scopes.to_bits([name])]
        if missing:
            raise HelixError(403, f"The user {user_id} has not authorized this client for {' '.join(missing)}")
        if user_id != broadcaster_id and not moderator and \
                not await self.accounts.granted(broadcaster_id, client_id) & scopes.to_bits(["channel:bot"]):
            raise HelixError(403, "The broadcaster has not authorized this client for channel:bot, "
                                  "and the user is not one of its moderators")

    async def _rate(self, grant: Grant) -> dict[str, str]:
        """Count one point in the caller's bucket; Twitch's headers; 429 when it is empty."""
        window = int(time.time()) // RATE_WINDOW
        who = grant.identity.user_id if grant.identity else "app"
        key = f"{{rl:{grant.client_id}:{who}}}:{window}"
        try:
            used, _ = await pipeline_call(self.shards.for_key(key), "helix_rate",
                                          [("INCR", key), ("EXPIRE", key, RATE_WINDOW * 2)])
        except ShardUnavailable:
            used = 0  # fail open: the bucket is a courtesy, not a safety check
        reset = (window + 1) * RATE_WINDOW
        headers = {"Ratelimit-Limit": str(RATE_LIMIT), "Ratelimit-Remaining": str(max(0, RATE_LIMIT - int(used))),
                   "Ratelimit-Reset": str(reset)}
        if int(used) > RATE_LIMIT:
            raise _RateLimited(headers)
        return headers

    # ---- ids
    async def user(self, user_id: str) -> dict[str, str]:
        """A known user by id ({login, display_name, created_at}), or a 400 naming the id."""
        found = await self.accounts.user(user_id) if user_id.isdigit() else None
        if found is None:
            raise HelixError(400, f"Invalid user ID: {user_id}")
        return found

    async def channel(self, broadcaster_id: str) -> ChannelState:
        login = (await self.user(broadcaster_id))["login"]
        channel = "#" + login
        if not twitch.is_valid_channel(channel):
            raise HelixError(400, f"Invalid broadcaster_id: {broadcaster_id}")
        return await self.channels.get(channel)


class _RateLimited(HelixError):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(429, "Too Many Requests")
        self.headers = headers


def paginate(items: list[Any], call: Call, most: int = MAX_PAGE, default: int = 20
             ) -> tuple[list[Any], dict[str, str]]:
    """Twitch's cursor pagination over a list: `first` (1-`most`, default `default`) and `after`."""
    try:
        first = int(call.request.query.get("first", str(default)))
    except ValueError:
        raise HelixError(400, f"The value of \"first\" must be a number from 1 through {most}") from None
    if not 1 <= first <= most:
        raise HelixError(400, f"The value of \"first\" must be a number from 1 through {most}")
    start = 0
    after = call.request.query.get("after")
    if after:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(after + "==")).get("o", 0))
        except (ValueError, AttributeError):
            raise HelixError(400, "The cursor in \"after\" is not valid") from None
    page = items[start:start + first]
    more = start + first < len(items)
    cursor = base64.urlsafe_b64encode(json.dumps({"o": start + first}).encode()).decode().rstrip("=")
    return page, ({"cursor": cursor} if more else {})

