"""Who exists, in Redis: registered OAuth clients, users seen, revoked tokens.

Users exist once they have logged in, had a token validated or were added with
`chatd token issue`; their id ↔ login mapping is what Helix ids and EventSub
conditions (`broadcaster_user_id`) are read through. Clients are added with
`chatd client add NAME`; only a digest of the secret is kept.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time

from common.shards import ShardSet, pipeline_call
from common.wire import Identity

# Long enough to outlive any token chatd issues (non-expiring ones included).
REVOKED_FOREVER = 10 * 365 * 86400
CLIENT_ID_ALPHABET = string.ascii_lowercase + string.digits


def login_key(login: str) -> str:
    return f"{{n:{login}}}:id"


def profile_key(user_id: str) -> str:
    return f"{{i:{user_id}}}:user"


def client_key(client_id: str) -> str:
    return f"{{cl:{client_id}}}"


def grants_key(user_id: str) -> str:
    """Which scopes the user granted each client (a hash: client id → scope bits)."""
    return f"{{i:{user_id}}}:grants"


def revoked_key(token_id: str) -> str:
    return f"{{tk:{token_id}}}:revoked"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Accounts:
    def __init__(self, shards: ShardSet) -> None:
        self.shards = shards

    async def _one(self, key: str, op: str, command: tuple) -> object:
        [result] = await pipeline_call(self.shards.for_key(key), op, [command])
        return result

    # ---- users
    async def remember(self, identity: Identity) -> None:
        """Record a user's id ↔ login (both ways: ids and logins live on different shards)."""
        await self._one(login_key(identity.login), "user_write", ("SET", login_key(identity.login), identity.user_id))
        key = profile_key(identity.user_id)
        await pipeline_call(self.shards.for_key(key), "user_write", [
            ("HSET", key, "login", identity.login, "display_name", identity.display_name),
            ("HSETNX", key, "created_at", str(int(time.time()))),
        ])

    async def user_id(self, login: str) -> str | None:
        found = await self._one(login_key(login), "user_id", ("GET", login_key(login)))
        return found.decode() if isinstance(found, bytes) else None

    async def user(self, user_id: str) -> dict[str, str] | None:
        """{login, display_name, created_at} of a user id, or None."""
        found = await self._one(profile_key(user_id), "user_read", ("HGETALL", profile_key(user_id)))
        if not found:
            return None
        return {key.decode(): value.decode() for key, value in found.items()}  # type: ignore[union-attr]

    async def display_names(self, user_ids: list[str]) -> dict[str, str]:
        """Display names of several users, one round trip per shard."""
        by_shard: dict = {}
        for user_id in user_ids:
            by_shard.setdefault(self.shards.for_key(profile_key(user_id)), []).append(user_id)
        found: dict[str, str] = {}
        for shard, ids in by_shard.items():
            answers = await pipeline_call(shard, "user_read", [("HGET", profile_key(i), "display_name") for i in ids])
            found.update({i: a.decode() for i, a in zip(ids, answers, strict=True) if isinstance(a, bytes)})
        return found

    # ---- what a user authorized: an app token acts for users only within it
    async def grant(self, user_id: str, client_id: str, scope_bits: int) -> None:
        """The user authorized the client for these scopes (the latest
        authorization stands, as on Twitch)."""
        key = grants_key(user_id)
        await self._one(key, "grant_write", ("HSET", key, client_id, str(scope_bits)))

    async def granted(self, user_id: str, client_id: str) -> int:
        """The scope bits the user granted the client; 0 if none."""
        found = await self._one(grants_key(user_id), "grant_read", ("HGET", grants_key(user_id), client_id))
        return int(found) if isinstance(found, bytes) else 0

    # ---- clients
    async def add_client(self, name: str) -> tuple[str, str]:
        """Register a client; returns (client_id, client_secret) — the secret is shown only now."""
        client_id = "".join(secrets.choice(CLIENT_ID_ALPHABET) for _ in range(30))
        secret = "".join(secrets.choice(CLIENT_ID_ALPHABET) for _ in range(30))
        await self._one(client_key(client_id), "client_write", (
            "HSET", client_key(client_id), "name", name, "secret", _digest(secret), "created_at", str(int(time.time()))))
        return client_id, secret

    async def client_ok(self, client_id: str, secret: str) -> bool:
        found = await self._one(client_key(client_id), "client_read", ("HGET", client_key(client_id), "secret"))
        return isinstance(found, bytes) and hmac.compare_digest(found.decode(), _digest(secret))

    async def client_exists(self, client_id: str) -> bool:
        return bool(await self._one(client_key(client_id), "client_read", ("EXISTS", client_key(client_id))))

    # ---- revocation
    async def revoke(self, token_id: str, ttl: int | None) -> None:
        key = revoked_key(token_id)
        await self._one(key, "revoke", ("SET", key, "1", "EX", max(1, ttl or REVOKED_FOREVER)))

    async def revoked(self, token_id: str) -> bool:
        key = revoked_key(token_id)
        return bool(await self._one(key, "revoked", ("EXISTS", key)))
