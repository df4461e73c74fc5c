import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def reliability():
    """Record a fault case's figures for docs/reliability.md (when RELIABILITY_REPORT names a file)."""
    path = os.environ.get("RELIABILITY_REPORT")

    def record(case: str, users_see: str, recovery: str, lost: str) -> None:
        if path:
            with open(path, "a") as report:
                report.write(json.dumps({"case": case, "users_see": users_see, "recovery": recovery,
                                         "lost": lost}) + "\n")

    return record
