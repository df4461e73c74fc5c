"""`python -m exchange`: one exchange process, configured by the environment (what `chatd exchange` runs)."""
from __future__ import annotations

import sys

from common.service_runner import run_service
from exchange.config import ExchangeSettings
from exchange.service import ExchangeService


def main() -> int:
    return run_service("exchange", ExchangeSettings.from_env, ExchangeService)


if __name__ == "__main__":
    sys.exit(main())
