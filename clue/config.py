"""Clue settings from the environment."""
from __future__ import annotations

from dataclasses import dataclass

from clue.emotes import DEFAULT_EMOTES, parse_emote_set
from common.config import CommonSettings, Env, parse_duration
from common.sessions import SessionSettings


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
    rate_limit_known: int
    rate_limit_verified: int
    rate_window: float
    channel_floor: float
    duplicate_window: float
    join_limit: int
    join_limit_verified: int
    emotes: dict[str, str]
    strict: bool
    history_limit: int
    history_age: float
    membership_limit: int
    presence_expiry: float
    sessions: SessionSettings

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
            # Twitch's two message buckets per user (clue.limits.rate_buckets): an
            # ordinary account's user bucket holds 20 messages per 30 seconds ...
            rate_limit=env.int("RATE_LIMIT", 20, minimum=1),
            # ... and its moderator bucket 100 (alone, where it is broadcaster, moderator or VIP).
            rate_limit_privileged=env.int("RATE_LIMIT_PRIVILEGED", 100, minimum=1),
            # A known bot's buckets hold 50 each (less than an ordinary moderator's), a verified bot's 7500.
            rate_limit_known=env.int("RATE_LIMIT_KNOWN", 50, minimum=1),
            rate_limit_verified=env.int("RATE_LIMIT_VERIFIED", 7500, minimum=1),
            rate_window=env.duration("RATE_WINDOW", "30s"),
            # Every channel's minimum slow mode for those without a role (Twitch: 1 s).
            channel_floor=env.parsed("CHANNEL_FLOOR", "1s", parse_duration),
            # The same text again in a channel within this is a duplicate (0: off).
            duplicate_window=env.parsed("DUPLICATE_WINDOW", "30s", parse_duration),
            # JOINs and logins per user per 10 s (Twitch: 20; a verified bot's JOINs: 2000).
            join_limit=env.int("JOIN_RATE_LIMIT", 20, minimum=1),
            join_limit_verified=env.int("JOIN_RATE_LIMIT_VERIFIED", 2000, minimum=1),
            emotes=env.parsed("EMOTES", DEFAULT_EMOTES, parse_emote_set),
            # Twitch since February 2023: slash commands over IRC are gone (Helix does moderation).
            strict=env.choice("TWITCH_STRICT", ("on", "off"), "off") == "on",
            # Channel history as its exchanges keep it (exchange: the same settings).
            history_limit=env.int("HISTORY_LIMIT", 800, minimum=0),
            history_age=env.duration("HISTORY_AGE", "24h"),
            # Others' JOIN and PART lines, and NAMES, only while a channel has at most this many
            # logged-in members (Twitch: 1,000).
            membership_limit=env.int("MEMBERSHIP_LIMIT", 1000, minimum=0),
            # A member no edge has re-asserted for this long is gone (its edge died): three
            # of the edges' refresh periods (EDGE_PRESENCE_REFRESH).
            presence_expiry=env.duration("PRESENCE_EXPIRY", "15m"),
            # Stream sessions: clue takes minute_broadcast events and lists sessions (the exchanges' settings).
            sessions=SessionSettings.from_env(env),
        )
