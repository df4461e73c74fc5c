"""Clue settings from the environment."""
from __future__ import annotations

from dataclasses import dataclass

from clue.emotes import DEFAULT_EMOTES, parse_emote_set
from common.config import CommonSettings, Env


@dataclass
class ClueSettings:
    common: CommonSettings
    http_listen: tuple[str, int]
    chat_secret: str
    cache_servers: list[tuple[str, int]]
    cache_max_conns: int
    cache_timeout: float
    cluster: str
    exchange_urls: dict[str, list[str]]
    channel_cache_ttl: float
    rate_limit: int
    rate_limit_privileged: int
    rate_window: float
    join_limit: int
    emotes: dict[str, str]
    strict: bool

    @classmethod
    def from_env(cls, env: Env | None = None) -> ClueSettings:
        env = env or Env()
        return cls(
            common=CommonSettings(env),
            http_listen=env.address("CLUE_HTTP_LISTEN", "127.0.0.1:0"),
            chat_secret=env.secret("CHAT_SECRET"),
            cache_servers=env.addresses("CACHE_SERVERS"),
            cache_max_conns=env.int("CACHE_MAX_CONNS", 10, minimum=1),
            cache_timeout=env.duration("CACHE_TIMEOUT", "100ms"),
            cluster=env.str("CLUSTER", "main"),
            exchange_urls=env.cluster_urls("EXCHANGE_URLS"),
            # A safety net under pub/sub invalidation, not the way changes spread.
            channel_cache_ttl=env.duration("CHANNEL_CACHE_TTL", "30s"),
            # Twitch's limit for ordinary chatters: 20 messages per 30 seconds.
            rate_limit=env.int("RATE_LIMIT", 20, minimum=1),
            # ... and 100 for the broadcaster, moderators and VIPs.
            rate_limit_privileged=env.int("RATE_LIMIT_PRIVILEGED", 100, minimum=1),
            rate_window=env.duration("RATE_WINDOW", "30s"),
            # JOINs and logins per user per 10 s (Twitch: 20).
            join_limit=env.int("JOIN_RATE_LIMIT", 20, minimum=1),
            emotes=env.parsed("EMOTES", DEFAULT_EMOTES, parse_emote_set),
            # Twitch since February 2023: slash commands over IRC are gone (Helix does moderation).
            strict=env.choice("TWITCH_STRICT", ("on", "off"), "off") == "on",
        )
