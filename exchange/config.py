"""Exchange settings from the environment."""
from __future__ import annotations

from dataclasses import dataclass

from analytics.highlights import Settings as DetectorSettings
from common.config import CommonSettings, Env
from common.sessions import SessionSettings
from common.webhooks import WebhookSettings


@dataclass
class HighlightSettings:
    detector: DetectorSettings
    keep: int  # highlights kept per channel
    webhooks: WebhookSettings | None

    @classmethod
    def from_env(cls, env: Env) -> HighlightSettings | None:
        if env.choice("HIGHLIGHTS", ("on", "off"), "on") == "off":
            return None
        return cls(detector=DetectorSettings.from_env(env), keep=env.int("HIGHLIGHT_KEEP", 1000, minimum=1),
                   webhooks=WebhookSettings.from_env(env))


@dataclass
class ExchangeSettings:
    common: CommonSettings
    http_listen: tuple[str, int]
    max_queue: int
    edge_max_conns: int
    history: int
    channel_idle: float
    cache_servers: list[tuple[str, int]]
    cache_max_conns: int
    cache_timeout: float
    history_limit: int
    history_age: float
    highlights: HighlightSettings | None
    sessions: SessionSettings | None
    cluster: str

    @classmethod
    def from_env(cls, env: Env | None = None) -> ExchangeSettings:
        env = env or Env()
        return cls(
            common=CommonSettings(env),
            http_listen=env.address("EXCHANGE_HTTP_LISTEN", "127.0.0.1:0"),
            # Messages held for one edge that is not taking them; older ones are dropped and counted.
            max_queue=env.int("EXCHANGE_MAX_QUEUE", 100_000, minimum=10),
            edge_max_conns=env.int("EXCHANGE_EDGE_MAX_CONNS", 4, minimum=1),
            # Recent events kept per channel: gaps are healed and re-subscribing
            # edges replayed from here, /delete finds messages here.
            history=env.int("EXCHANGE_HISTORY", 2000, minimum=10),
            # A channel nobody subscribes to or writes to is forgotten after this long.
            channel_idle=env.duration("EXCHANGE_CHANNEL_IDLE", "5m"),
            # Redis, where the exchange writes each channel's history (none: no history).
            cache_servers=env.addresses("CACHE_SERVERS") if env.str("CACHE_SERVERS", "") else [],
            cache_max_conns=env.int("CACHE_MAX_CONNS", 10, minimum=1),
            cache_timeout=env.duration("CACHE_TIMEOUT", "100ms"),
            # Channel history (recent-messages, CHATHISTORY): the last HISTORY_LIMIT lines of HISTORY_AGE
            # (0: keep none).
            history_limit=env.int("HISTORY_LIMIT", 800, minimum=0),
            history_age=env.duration("HISTORY_AGE", "24h"),
            # Stream highlights, detected live on each channel's chat (needs CACHE_SERVERS).
            highlights=HighlightSettings.from_env(env),
            # Stream sessions (exchange/sessions.py), with Redis.
            sessions=SessionSettings.from_env(env) if env.choice("SESSIONS", ("on", "off"), "on") == "on" else None,
            cluster=env.str("CLUSTER", "main"),  # named in /health (the console's cluster map)
        )
