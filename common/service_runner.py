"""Runs one chatd service process: config, logging, metrics, signals."""
from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

import uvloop

from common.config import ConfigError
from common.log import configure_logging
from common.metrics import Metrics


class StartFailed(Exception):
    """A service could not start; the message says why (one stderr line, no traceback)."""


class Service(Protocol):
    addresses: dict[str, str]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def run_service(name: str, load_settings: Callable[[], Any], build: Callable[[Any, Metrics], Service]) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chatd {name}: {exc}", file=sys.stderr)
        return 2
    log = configure_logging(name, settings.common.log_format)
    common = settings.common
    metrics = Metrics(common.statsd_host, common.statsd_port, common.statsd_prefix, name)

    async def main() -> int:
        service = build(settings, metrics)
        try:
            await service.start()
        except (OSError, StartFailed) as exc:
            print(f"chatd {name}: cannot start: {exc}", file=sys.stderr)
            await service.stop()
            return 1
        metrics.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # The launcher (and anyone watching) reads the bound ports from this line.
        log.info("listening", **service.addresses)
        await stop.wait()
        log.info("stopping")
        await service.stop()
        await metrics.stop()
        return 0

    return uvloop.run(main())
