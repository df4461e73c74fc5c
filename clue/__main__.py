"""`python -m clue`: one clue process, configured by the environment (what `chatd clue` runs)."""
from __future__ import annotations

import sys

from clue.config import ClueSettings
from clue.service import ClueService
from common.service_runner import run_service


def main() -> int:
    return run_service("clue", ClueSettings.from_env, ClueService)


if __name__ == "__main__":
    sys.exit(main())
