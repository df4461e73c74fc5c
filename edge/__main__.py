"""`python -m edge`: one edge process, configured by the environment (what `chatd edge` runs)."""
from __future__ import annotations

import sys

from common.service_runner import run_service
from edge.config import EdgeSettings
from edge.service import EdgeService


def main() -> int:
    return run_service("edge", EdgeSettings.from_env, EdgeService)


if __name__ == "__main__":
    sys.exit(main())
