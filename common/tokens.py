"""Bearer tokens naming a chat identity, signed with CHAT_SECRET.

A token is base32 of the JSON claims followed by a 64-hex-digit HMAC-SHA256,
all lowercase letters and digits. That shape matters: tmi.js lowercases the
token before sending it, which a JWT (base64url, case-sensitive) would not
survive, and Twitch's own tokens look the same way.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass

from common import scopes
from common.wire import Identity

LOGIN_RE = re.compile(r"^[a-z0-9_]{1,25}$")
COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
# Twitch's bot statuses (the `bot` claim; none for an ordinary account): each has its rate profile.
BOT_STATUSES = ("known", "verified")


class TokenError(Exception):
    """The token is malformed, badly signed or expired."""


def stable_id(name: str) -> str:
    """A numeric id derived from a login or channel name.

    Twitch's room-id is the broadcaster's user-id; deriving both from the name
    keeps them equal without a registry.
    """
    digest = hashlib.sha256(name.lower().encode()).digest()
    return str(int.from_bytes(digest[:6], "big") % 900_000_000 + 100_000_000)


# The client chatd's own command line issues tokens for (`chatd token issue`).
CLI_CLIENT_ID = "chatdcli"
USER, APP, REFRESH = "u", "a", "r"


@dataclass(frozen=True, slots=True)
class Grant:
    """Everything a token says: whose it is (none for an app token), for which
    client, with which scopes, and until when."""

    kind: str  # USER, APP or REFRESH
    identity: Identity | None
    client_id: str
    scopes: int  # common.scopes bits
    expires_at: float | None
    token_id: str  # what revocation records (a digest, never the token itself)

    def expires_in(self, now: float | None = None) -> int | None:
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - (now or time.time())))

    def has(self, *names: str) -> bool:
        """Holds every one of these scopes."""
        return all(self.scopes & scopes.to_bits([name]) for name in names)


def issue_token(
    secret: str,
    login: str,
    *,
    user_id: str | None = None,
    display_name: str | None = None,
    color: str = "",
    subscriber: bool = False,
    bot: str = "",
    ttl: float | None = None,
    client_id: str = CLI_CLIENT_ID,
    scope_bits: int = scopes.ALL,
    kind: str = USER,
) -> str:
    """A user access token (or, with kind=REFRESH, a refresh token) for LOGIN."""
    login = login.lower()
    if not LOGIN_RE.match(login):
        raise ValueError("login must be 1-25 characters of a-z, 0-9 and _")
    if color and not COLOR_RE.match(color):
        raise ValueError("color must look like #RRGGBB")
    if user_id is not None and not user_id.isdigit():
        raise ValueError("user id must be digits")
    if bot and bot not in BOT_STATUSES:
        raise ValueError(f"bot status must be one of {', '.join(BOT_STATUSES)}")
    claims: dict = {"sub": login, "uid": user_id or stable_id(login), "dn": display_name or login}
    if color:
        claims["color"] = color.upper()
    if subscriber:
        claims["subscriber"] = True
    if bot:
        claims["bot"] = bot
    return _sign(secret, claims, kind, client_id, scope_bits, ttl)


def issue_app_token(secret: str, client_id: str, *, ttl: float | None = None, scope_bits: int = 0) -> str:
    """An app access token (client credentials): a client, no user."""
    return _sign(secret, {}, APP, client_id, scope_bits, ttl)


def _sign(secret: str, claims: dict, kind: str, client_id: str, scope_bits: int, ttl: float | None) -> str:
    claims = {**claims, "typ": kind, "cid": client_id, "scp": scope_bits, "iat": time.time()}
    if ttl is not None:
        claims["exp"] = int(time.time() + ttl)
    encoded = json.dumps(claims, separators=(",", ":")).encode()
    payload = base64.b32encode(encoded).decode().rstrip("=").lower()
    return payload + _signature(secret, payload)


SIGNATURE_CHARS = 64


def _signature(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def token_id(token: str) -> str:
    return hashlib.sha256(token.strip().lower().encode()).hexdigest()[:32]


def read_token(secret: str, token: str) -> Grant:
    """What a token grants; raises TokenError if it is forged, malformed or expired."""
    token = token.strip().lower().removeprefix("oauth:")
    payload, signature = token[:-SIGNATURE_CHARS], token[-SIGNATURE_CHARS:]
    if not payload or not hmac.compare_digest(signature, _signature(secret, payload)):
        raise TokenError("bad signature")
    try:
        padded = payload.upper() + "=" * (-len(payload) % 8)
        claims = json.loads(base64.b32decode(padded))
    except (binascii.Error, ValueError):
        raise TokenError("malformed claims") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed claims")
    if "exp" in claims and time.time() >= float(claims["exp"]):
        raise TokenError("expired")
    kind = str(claims.get("typ", USER))
    identity = None
    if kind != APP:
        login = str(claims.get("sub", ""))
        if not LOGIN_RE.match(login) or "uid" not in claims:
            raise TokenError("bad login claim")
        bot = claims.get("bot", "")
        if bot != "" and bot not in BOT_STATUSES:
            raise TokenError("bad bot claim")
        identity = Identity(
            login=login,
            user_id=str(claims["uid"]),
            display_name=str(claims.get("dn") or login),
            color=str(claims.get("color", "")),
            subscriber=bool(claims.get("subscriber", False)),
            bot=bot,
        )
    return Grant(kind=kind, identity=identity, client_id=str(claims.get("cid", CLI_CLIENT_ID)),
                 scopes=int(claims.get("scp", scopes.ALL)), expires_at=float(claims["exp"]) if "exp" in claims
                 else None, token_id=token_id(token))


def verify_token(secret: str, token: str) -> Identity:
    """The chat identity of a user access token (what an IRC login needs)."""
    grant = read_token(secret, token)
    if grant.kind != USER or grant.identity is None:
        raise TokenError("not a user access token")
    return grant.identity
