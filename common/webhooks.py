"""Signed webhook deliveries, as the Standard Webhooks specification signs them
(https://www.standardwebhooks.com), so a receiver can verify one with that
project's libraries in any language, or with a few lines of HMAC.

Every delivery carries `webhook-id` (the same on every retry: receivers drop
what they already have), `webhook-timestamp` (Unix seconds of this attempt) and
`webhook-signature`: `v1,` + base64 of HMAC-SHA256, keyed with the secret's
bytes (base64 after its `whsec_` prefix), over `{id}.{timestamp}.{body}`.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import time
from dataclasses import dataclass

import aiohttp
from standardwebhooks import Webhook

from common.config import ConfigError, Env

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24  # the specification asks for 24 to 64 random bytes
MAX_BACKOFF = 600.0  # retries are never further apart than this (seconds)


def check_secret(secret: str) -> None:
    """ValueError unless `secret` is `whsec_` + base64 of at least MIN_KEY_BYTES bytes."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"expected {SECRET_PREFIX} followed by the base64 of {MIN_KEY_BYTES} or more random bytes")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX} is not base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key is {len(key)} bytes; use {MIN_KEY_BYTES} or more")


@dataclass
class WebhookSettings:
    urls: list[str]
    secret: str  # Standard Webhooks' `whsec_…`
    timeout: float
    backoff: float  # the first retry's delay; each next one doubles, up to MAX_BACKOFF
    attempts: int
    queue: int  # deliveries the outbox holds at most; beyond, new ones are dropped (counted)

    @classmethod
    def from_env(cls, env: Env, urls: list[str] | None = None) -> WebhookSettings | None:
        """From HIGHLIGHT_WEBHOOK_* (and the URLs from HIGHLIGHT_WEBHOOKS unless given); None without URLs."""
        if urls is None:
            urls = env.urls("HIGHLIGHT_WEBHOOKS") if env.str("HIGHLIGHT_WEBHOOKS", "") else []
        if not urls:
            return None
        secret = env.str("HIGHLIGHT_WEBHOOK_SECRET", "")
        if not secret:
            raise ConfigError("HIGHLIGHT_WEBHOOK_SECRET is required with HIGHLIGHT_WEBHOOKS")
        try:
            check_secret(secret)
        except ValueError as exc:
            raise ConfigError(f"HIGHLIGHT_WEBHOOK_SECRET: {exc}") from None
        return cls(
            urls=urls,
            secret=secret,
            timeout=env.duration("HIGHLIGHT_WEBHOOK_TIMEOUT", "5s"),
            backoff=env.duration("HIGHLIGHT_WEBHOOK_BACKOFF", "1s"),
            attempts=env.int("HIGHLIGHT_WEBHOOK_ATTEMPTS", 20, minimum=1),
            queue=env.int("HIGHLIGHT_WEBHOOK_QUEUE", 10_000, minimum=1),
        )


class Signer:
    def __init__(self, secret: str) -> None:
        check_secret(secret)
        self._webhook = Webhook(secret)

    def headers(self, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        timestamp = int(time.time() if now is None else now)
        moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
        return {
            "Content-Type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self._webhook.sign(delivery_id, moment, body.decode()),
        }


def backoff(failures: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait after `failures` failed attempts: base, 2·base, 4·base, … at most `cap`."""
    return min(cap, base * 2 ** min(max(0, failures - 1), 32))


async def post(session: aiohttp.ClientSession, url: str, body: bytes, delivery_id: str, signer: Signer,
               timeout: float) -> str:
    """One attempt: "" when the receiver took it (any 2xx), else why not."""
    try:
        async with session.post(url, data=body, headers=signer.headers(delivery_id, body),
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            return "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except TimeoutError:
        return "timeout"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return type(exc).__name__
