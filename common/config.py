"""Configuration from the environment (SPEC §4).

Every service builds its settings through `Env`, which turns a wrong or missing
value into one `ConfigError` naming the variable; the command line prints that
single line and exits, never a traceback.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A configuration value is missing or malformed."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`100ms`, `1s`, `1.5s`, `2m`, `1h` or a bare number of seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration like 100ms or 2s, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def parse_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {text!r}")
    return text.strip().rstrip("/")


class Env:
    """Typed reads of environment variables that fail with the variable's name."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str, default: str | None) -> str:
        value = self.environ.get(name, "")
        if value.strip() == "":
            if default is None:
                raise ConfigError(f"{name} is required but not set")
            return default
        return value

    def _convert(self, name: str, raw: str, convert):
        try:
            return convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    def str(self, name: str, default: str | None = None) -> str:
        return self._raw(name, default)

    def secret(self, name: str, min_length: int = 16) -> str:
        value = self._raw(name, None)
        if len(value) < min_length:
            raise ConfigError(f"{name} must be at least {min_length} characters")
        return value

    def int(self, name: str, default: int | None = None, minimum: int = 0) -> int:
        raw = self._raw(name, None if default is None else str(default))
        value = self._convert(name, raw, int)
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    def duration(self, name: str, default: str) -> float:
        value = self._convert(name, self._raw(name, default), parse_duration)
        if value <= 0:
            raise ConfigError(f"{name} must be longer than zero")
        return value

    def address(self, name: str, default: str | None = None) -> tuple[str, int]:
        return self._convert(name, self._raw(name, default), parse_address)

    def addresses(self, name: str, default: str | None = None) -> list[tuple[str, int]]:
        raw = self._raw(name, default)
        items = [item for item in raw.split(",") if item.strip()]
        if not items:
            raise ConfigError(f"{name} lists no host:port")
        return [self._convert(name, item, parse_address) for item in items]

    def urls(self, name: str, default: str | None = None) -> list[str]:
        raw = self._raw(name, default)
        items = [item for item in raw.split(",") if item.strip()]
        if not items:
            raise ConfigError(f"{name} lists no URL")
        return [self._convert(name, item, parse_url) for item in items]

    def cluster_urls(self, name: str, required: bool = True) -> dict[str, list[str]]:
        """Per-cluster URL lists: `NAME` is the `main` cluster's, `NAME_<CLUSTER>`
        (e.g. `EXCHANGE_URLS_EVENT`) another cluster's."""
        clusters = {"main": self.urls(name)} if required or self.environ.get(name) else {}
        prefix = name + "_"
        for key in sorted(self.environ):
            if key.startswith(prefix) and self.environ[key].strip():
                cluster = key[len(prefix):].lower()
                if not cluster.isalnum():
                    raise ConfigError(f"{key}: cluster names are letters and digits")
                clusters[cluster] = self.urls(key)
        return clusters

    def existing_file(self, name: str) -> str | None:
        """An optional path that, when set, must name a readable file."""
        value = self.environ.get(name, "").strip()
        if not value:
            return None
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise ConfigError(f"{name}: no readable file at {value!r}")
        return value

    def parsed(self, name: str, default: str, parse):
        """A value turned into something else by `parse`, which raises ValueError."""
        return self._convert(name, self._raw(name, default), parse)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self._raw(name, default).strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value


class CommonSettings:
    """Settings every service reads the same way."""

    def __init__(self, env: Env) -> None:
        self.internal_token: str = env.secret("CHAT_INTERNAL_TOKEN")
        self.server_name: str = env.str("CHAT_SERVER_NAME", "tmi.twitch.tv")
        self.statsd_host: str = env.str("STATSD_HOST", "127.0.0.1")
        self.statsd_port: int = env.int("STATSD_PORT", 8125, minimum=1)
        self.statsd_prefix: str = env.str("STATSD_PREFIX", "chatd")
        self.log_format: str = env.choice("LOG_FORMAT", ("json", "console"), "json")
        # Every call to another service is bounded (SPEC §6, lesson 4).
        self.http_timeout: float = env.duration("HTTP_TIMEOUT", "2s")
