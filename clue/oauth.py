"""OAuth as id.twitch.tv serves it: token, validate, revoke — plus the Twitch
CLI's development grant (`POST /auth/authorize?grant_type=user_token…`).

Tokens are chatd's signed tokens (common/tokens.py) carrying the client, the
scopes and the expiry; revocation is the one thing kept in Redis. Parameters
come as a query string or a form body, as the libraries send them. Errors are
id.twitch.tv's: `{"status": 400, "message": "…"}`.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from clue.accounts import Accounts
from common import scopes
from common.internal_http import ApiError
from common.shards import ShardUnavailable
from common.tokens import (
    APP,
    REFRESH,
    USER,
    Grant,
    TokenError,
    issue_app_token,
    issue_token,
    read_token,
)
from common.wire import Identity

# Lifetimes of what OAuth issues (Twitch: about four hours for user tokens, 60 days for app tokens).
USER_TOKEN_TTL = 4 * 3600
APP_TOKEN_TTL = 60 * 86400
# `expires_in` for tokens that never expire (`chatd token issue` without --ttl): libraries
# refresh tokens that say they are about to expire, and these never are.
NEVER_EXPIRES_IN = 365 * 86400


class OAuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def oauth_error(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)


class OAuth:
    def __init__(self, secret: str, accounts: Accounts) -> None:
        self.secret = secret
        self.accounts = accounts
        # Told when a user's token is revoked: (client id, user id) → their EventSub subscriptions end.
        self.on_user_revoked: Callable[[str, str], Awaitable[None]] | None = None

    async def authenticate(self, token: str, kinds: tuple[str, ...] = (USER,)) -> Grant:
        """A token that is genuine, unexpired, not revoked and of one of `kinds`."""
        try:
            grant = read_token(self.secret, token)
        except TokenError as exc:
            raise OAuthError(401, "invalid access token") from exc
        if grant.kind not in kinds:
            raise OAuthError(401, "invalid access token")
        try:
            revoked = await self.accounts.revoked(grant.token_id)
        except ShardUnavailable:
            revoked = False  # fail open, as logins do: a revoked token still cannot outlive its expiry
        if revoked:
            raise OAuthError(401, "invalid access token")
        return grant

    async def bearer_user(self, request: web.Request) -> Identity:
        """The user whose token the request carries (`Authorization: Bearer …`); ApiError 401 otherwise."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "no bearer token")
        try:
            grant = await self.authenticate(token)
        except OAuthError as exc:
            raise ApiError(401, exc.message) from None
        assert grant.identity is not None  # a user token
        return grant.identity

    # ---- handlers (clue routes /oauth2/*; edges map the Twitch CLI's /auth/* here)
    async def on_validate(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("oauth", "bearer") or not token:
            return oauth_error(401, "missing authorization token")
        try:
            grant = await self.authenticate(token, (USER, APP))
        except OAuthError as exc:
            return oauth_error(exc.status, exc.message)
        answer: dict = {"client_id": grant.client_id, "scopes": scopes.to_names(grant.scopes),
                        "expires_in": _expires_in(grant)}
        if grant.identity is not None:
            answer |= {"login": grant.identity.login, "user_id": grant.identity.user_id}
            await self._remember(grant)
        return web.json_response(answer)

    async def on_token(self, request: web.Request) -> web.Response:
        params = await _params(request)
        grant_type = params.get("grant_type", "")
        try:
            if grant_type == "client_credentials":
                await self._client(params)
                bits = scopes.parse(params.get("scope", ""))
                token = issue_app_token(self.secret, params["client_id"], ttl=APP_TOKEN_TTL, scope_bits=bits)
                return web.json_response({"access_token": token, "expires_in": APP_TOKEN_TTL,
                                          "token_type": "bearer", "scope": scopes.to_names(bits)})
            if grant_type == "refresh_token":
                await self._client(params)
                refresh = await self.authenticate(params.get("refresh_token", ""), (REFRESH,))
                if refresh.client_id != params["client_id"]:
                    raise OAuthError(400, "Invalid refresh token")
                return web.json_response(self._user_tokens(refresh))
            raise OAuthError(400, "Invalid grant type")
        except OAuthError as exc:
            return oauth_error(exc.status if exc.status != 401 else 400, exc.message)
        except scopes.UnknownScope as exc:
            return oauth_error(400, str(exc))

    async def on_authorize(self, request: web.Request) -> web.Response:
        """The Twitch CLI's mock grant: a user token for `user_id`, no browser involved."""
        params = await _params(request)
        try:
            if params.get("grant_type") != "user_token":
                raise OAuthError(400, "Invalid grant type")
            await self._client(params)
            user = await self.accounts.user(params.get("user_id", ""))
            if user is None:
                raise OAuthError(400, "Invalid user id: a user exists once it has logged in or been issued a token")
            grant = Grant(kind=REFRESH, identity=None, client_id=params["client_id"],
                          scopes=scopes.parse(params.get("scope", "")), expires_at=None, token_id="")
            await self.accounts.grant(params["user_id"], grant.client_id, grant.scopes)
            return web.json_response(self._user_tokens(grant, login=user["login"], user_id=params["user_id"],
                                                       display_name=user.get("display_name")))
        except OAuthError as exc:
            return oauth_error(exc.status, exc.message)
        except scopes.UnknownScope as exc:
            return oauth_error(400, str(exc))

    async def on_revoke(self, request: web.Request) -> web.Response:
        params = await _params(request)
        try:
            grant = read_token(self.secret, params.get("token", ""))
        except TokenError:
            return oauth_error(400, "Invalid token")
        if grant.client_id != params.get("client_id"):
            return oauth_error(404, "client does not exist")
        await self.accounts.revoke(grant.token_id, grant.expires_in())
        if grant.identity is not None and self.on_user_revoked is not None:
            await self.on_user_revoked(grant.client_id, grant.identity.user_id)
        return web.Response(status=200)

    # ---- pieces
    async def _client(self, params: dict[str, str]) -> None:
        client_id, secret = params.get("client_id", ""), params.get("client_secret", "")
        if not client_id:
            raise OAuthError(400, "missing client id")
        if not await self.accounts.client_ok(client_id, secret):
            raise OAuthError(403, "invalid client secret")

    def _user_tokens(self, refresh: Grant, *, login: str | None = None, user_id: str | None = None,
                     display_name: str | None = None) -> dict:
        """A fresh access token and refresh token for the user a refresh grant names."""
        identity = refresh.identity
        login = login or (identity.login if identity else "")
        user_id = user_id or (identity.user_id if identity else None)
        display_name = display_name or (identity.display_name if identity else None)
        common = {"user_id": user_id, "display_name": display_name, "client_id": refresh.client_id,
                  "scope_bits": refresh.scopes}
        if identity is not None:
            common |= {"color": identity.color, "subscriber": identity.subscriber, "bot": identity.bot}
        access = issue_token(self.secret, login, ttl=USER_TOKEN_TTL, **common)
        new_refresh = issue_token(self.secret, login, kind=REFRESH, **common)
        return {"access_token": access, "refresh_token": new_refresh, "expires_in": USER_TOKEN_TTL,
                "scope": scopes.to_names(refresh.scopes), "token_type": "bearer"}

    async def _remember(self, grant: Grant) -> None:
        assert grant.identity is not None
        try:
            await self.accounts.remember(grant.identity)
        except ShardUnavailable:
            pass  # the registry catches up at the next login or validate


def _expires_in(grant: Grant) -> int:
    remaining = grant.expires_in(time.time())
    return NEVER_EXPIRES_IN if remaining is None else remaining


async def _params(request: web.Request) -> dict[str, str]:
    """OAuth parameters from the query string and, when there is one, a form body."""
    params = dict(request.query)
    if request.can_read_body and request.content_type == "application/x-www-form-urlencoded":
        params |= {key: str(value) for key, value in (await request.post()).items()}
    return params
