"""`python -m edge`: one edge process, configured by the environment (what `chatd edge` runs);
with EDGE_WORKERS above 1, the parent of that many (edge/workers.py)."""
from __future__ import annotations

import sys

from common.metrics import Metrics
from common.service_runner import Service, run_service
from edge.config import EdgeSettings
from edge.service import EdgeService


def build(settings: EdgeSettings, metrics: Metrics) -> Service:
    if settings.workers > 1 and settings.worker is None:
        from edge.workers import Workers

        return Workers(settings, metrics)
    return EdgeService(settings, metrics)


def main() -> int:
    return run_service("edge", EdgeSettings.from_env, build)


if __name__ == "__main__":
    sys.exit(main())
