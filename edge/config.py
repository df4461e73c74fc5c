"""Edge settings from the environment."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from common.config import CommonSettings, ConfigError, Env

MAX_WORKERS = 256  # more than any machine's cores: a typo, not a plan


@dataclass
class EdgeSettings:
    common: CommonSettings
    edge_id: str
    irc_listen: tuple[str, int]
    ws_listen: tuple[str, int]
    http_listen: tuple[str, int]
    advertised_url: str | None
    clue_urls: dict[str, list[str]]
    exchange_urls: dict[str, list[str]]
    max_channels: int
    send_buffer: int
    max_per_ip: int
    tls_cert: str | None
    tls_key: str | None
    irc_tls_listen: tuple[str, int]
    wss_listen: tuple[str, int]
    ping_interval: float
    registration_timeout: float
    handshake_timeout: float
    proxy_protocol: bool
    trusted_proxies: frozenset[str]
    max_inflight: int
    join_limit: int
    public_url: str
    drain_timeout: float
    presence_interval: float
    presence_refresh: float
    console_token: str  # "": no console
    workers: int
    worker: int | None  # this process is worker N of an edge started with EDGE_WORKERS (edge/workers.py)

    @classmethod
    def from_env(cls, env: Env | None = None) -> EdgeSettings:
        env = env or Env()
        settings = cls(
            common=CommonSettings(env),
            edge_id=env.str("EDGE_ID", f"{socket.gethostname()}-{os.getpid()}"),
            irc_listen=env.address("EDGE_IRC_LISTEN", "127.0.0.1:6667"),
            ws_listen=env.address("EDGE_WS_LISTEN", "127.0.0.1:8080"),
            # Internal delivery endpoint: loopback unless told otherwise (SPEC §1.5).
            http_listen=env.address("EDGE_HTTP_LISTEN", "127.0.0.1:0"),
            advertised_url=env.str("EDGE_ADVERTISED_URL", "") or None,
            clue_urls=env.cluster_urls("CLUE_URLS"),
            exchange_urls=env.cluster_urls("EXCHANGE_URLS"),
            max_channels=env.int("EDGE_MAX_CHANNELS", 1000, minimum=1),
            send_buffer=env.int("EDGE_SEND_BUFFER", 4 * 1024 * 1024, minimum=4096),
            # 0: no limit. Behind a proxy, turn on EDGE_PROXY_PROTOCOL so the limit sees real clients.
            max_per_ip=env.int("EDGE_MAX_CONNECTIONS_PER_IP", 200, minimum=0),
            tls_cert=env.existing_file("EDGE_TLS_CERT"),
            tls_key=env.existing_file("EDGE_TLS_KEY"),
            irc_tls_listen=env.address("EDGE_IRC_TLS_LISTEN", "127.0.0.1:6697"),
            wss_listen=env.address("EDGE_WSS_LISTEN", "127.0.0.1:8443"),
            # A silent client gets PING after this long and is closed after twice it.
            ping_interval=env.duration("EDGE_PING_INTERVAL", "60s"),
            registration_timeout=env.duration("EDGE_REGISTRATION_TIMEOUT", "10s"),
            # A connection must finish its PROXY header and WebSocket handshake this fast.
            handshake_timeout=env.duration("EDGE_HANDSHAKE_TIMEOUT", "5s"),
            proxy_protocol=env.choice("EDGE_PROXY_PROTOCOL", ("off", "on"), "off") == "on",
            trusted_proxies=frozenset(
                item.strip() for item in env.str("EDGE_TRUSTED_PROXIES", "127.0.0.1,::1").split(",") if item.strip()
            ),
            # A connection with this many messages awaiting their outcome is not read from.
            max_inflight=env.int("EDGE_MAX_INFLIGHT", 100, minimum=1),
            # JOINs one connection may send per 10 s (Twitch: 20), anonymous ones included.
            join_limit=env.int("EDGE_JOIN_RATE_LIMIT", 20, minimum=1),
            # Where clients reach this edge's WebSocket port (behind a proxy: the proxy's):
            # EventSub sessions of a draining edge are told to reconnect there.
            public_url=env.str("EDGE_PUBLIC_URL", ""),
            # How long a stopping edge waits for its EventSub sessions to reconnect elsewhere.
            drain_timeout=env.duration("EDGE_DRAIN_TIMEOUT", "10s"),
            # Who joined and left, sent to clue once per interval (membership lines come in batches).
            presence_interval=env.duration("EDGE_PRESENCE_INTERVAL", "1s"),
            # Members still here are re-asserted this often (clue forgets them after PRESENCE_EXPIRY).
            presence_refresh=env.duration("EDGE_PRESENCE_REFRESH", "5m"),
            console_token=console_token(env),
            # Worker processes sharing the public ports (SO_REUSEPORT), one edge each.
            workers=env.int("EDGE_WORKERS", 1, minimum=1),
            # Set by the parent of workers, never by hand.
            worker=env.int("EDGE_WORKER", 0) if env.environ.get("EDGE_WORKER", "").strip() else None,
        )
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ConfigError("EDGE_TLS_CERT and EDGE_TLS_KEY must be set together")
        if settings.workers > MAX_WORKERS:
            raise ConfigError(f"EDGE_WORKERS must be at most {MAX_WORKERS}, got {settings.workers}")
        if settings.workers > 1 and settings.advertised_url:
            raise ConfigError("EDGE_ADVERTISED_URL names one process; with EDGE_WORKERS each worker advertises "
                              "the address it binds on EDGE_HTTP_LISTEN's host")
        for cluster in settings.clue_urls.keys() ^ settings.exchange_urls.keys():
            raise ConfigError(f"cluster {cluster!r} needs both CLUE_URLS and EXCHANGE_URLS settings")
        return settings


def console_token(env: Env) -> str:
    """The operator console's admin token: CONSOLE_TOKEN, by default the internal token; `off`: no console."""
    if env.str("CONSOLE_TOKEN", "").strip().lower() == "off":
        return ""
    if env.str("CONSOLE_TOKEN", ""):
        return env.secret("CONSOLE_TOKEN")
    return env.secret("CHAT_INTERNAL_TOKEN")
