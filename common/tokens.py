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

from common.wire import Identity

LOGIN_RE = re.compile(r"^[a-z0-9_]{1,25}$")
COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")


class TokenError(Exception):
    """The token is malformed, badly signed or expired."""


def stable_id(name: str) -> str:
    """A numeric id derived from a login or channel name.

    Twitch's room-id is the broadcaster's user-id; deriving both from the name
    keeps them equal without a registry.
    """
    digest = hashlib.sha256(name.lower().encode()).digest()
    return str(int.from_bytes(digest[:6], "big") % 900_000_000 + 100_000_000)


def issue_token(
    secret: str,
    login: str,
    *,
    user_id: str | None = None,
    display_name: str | None = None,
    color: str = "",
    subscriber: bool = False,
    ttl: float | None = None,
) -> str:
    login = login.lower()
    if not LOGIN_RE.match(login):
        raise ValueError("login must be 1-25 characters of a-z, 0-9 and _")
    if color and not COLOR_RE.match(color):
        raise ValueError("color must look like #RRGGBB")
    if user_id is not None and not user_id.isdigit():
        raise ValueError("user id must be digits")
    claims: dict = {
        "sub": login,
        "uid": user_id or stable_id(login),
        "dn": display_name or login,
        "iat": int(time.time()),
    }
    if color:
        claims["color"] = color.upper()
    if subscriber:
        claims["subscriber"] = True
    if ttl is not None:
        claims["exp"] = int(time.time() + ttl)
    encoded = json.dumps(claims, separators=(",", ":")).encode()
    payload = base64.b32encode(encoded).decode().rstrip("=").lower()
    return payload + _signature(secret, payload)


SIGNATURE_CHARS = 64


def _signature(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify_token(secret: str, token: str) -> Identity:
    token = token.strip().lower()
    payload, signature = token[:-SIGNATURE_CHARS], token[-SIGNATURE_CHARS:]
    if not payload or not hmac.compare_digest(signature, _signature(secret, payload)):
        raise TokenError("bad signature")
    try:
        padded = payload.upper() + "=" * (-len(payload) % 8)
        claims = json.loads(base64.b32decode(padded))
    except (binascii.Error, ValueError):
        raise TokenError("malformed claims") from None
    if not isinstance(claims, dict) or "sub" not in claims or "uid" not in claims:
        raise TokenError("missing claims")
    if "exp" in claims and time.time() >= float(claims["exp"]):
        raise TokenError("expired")
    login = str(claims["sub"])
    if not LOGIN_RE.match(login):
        raise TokenError("bad login claim")
    return Identity(
        login=login,
        user_id=str(claims["uid"]),
        display_name=str(claims.get("dn") or login),
        color=str(claims.get("color", "")),
        subscriber=bool(claims.get("subscriber", False)),
    )
