"""Edge settings from the environment."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from common.config import CommonSettings, Env


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
    ping_interval: float
    registration_timeout: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> EdgeSettings:
        env = env or Env()
        return cls(
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
            # A silent client gets PING after this long and is closed after twice it.
            ping_interval=env.duration("EDGE_PING_INTERVAL", "60s"),
            registration_timeout=env.duration("EDGE_REGISTRATION_TIMEOUT", "10s"),
        )
