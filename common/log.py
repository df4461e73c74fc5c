"""structlog set-up: one JSON object per line on stdout (or console lines)."""
from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(service: str, log_format: str = "json") -> structlog.stdlib.BoundLogger:
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (aiohttp, websockets) only report warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.get_logger()
