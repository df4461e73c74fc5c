"""Bearer tokens: signed JWTs (HS256 with CHAT_SECRET) naming a chat identity."""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass

import jwt

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


@dataclass(frozen=True, slots=True)
class Identity:
    login: str
    user_id: str
    display_name: str
    color: str = ""
    subscriber: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Identity:
        return cls(
            login=str(data["login"]),
            user_id=str(data["user_id"]),
            display_name=str(data.get("display_name") or data["login"]),
            color=str(data.get("color") or ""),
            subscriber=bool(data.get("subscriber", False)),
        )


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
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str) -> Identity:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub", "uid"]})
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
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
