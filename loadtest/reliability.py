"""Render docs/reliability.md from the figures the fault tests record.

    RELIABILITY_REPORT=/tmp/rel.jsonl pytest tests/test_chaos.py tests/test_delivery.py ...
    python -m loadtest.reliability /tmp/rel.jsonl > docs/reliability.md
"""
from __future__ import annotations

import json
import sys

HEADER = """# Reliability

Each row is produced by a test in `tests/` that breaks a real process (SIGKILL, SIGSTOP,
SIGTERM), a real socket or a real client, on loopback, bounded in time. "Lost" counts
accepted messages that clients which stayed connected never received without being able
to tell; messages refused with a NOTICE (the sender is told) are not lost. Regenerate:

    RELIABILITY_REPORT=/tmp/rel.jsonl .venv/bin/pytest tests/test_chaos.py tests/test_delivery.py \\
        tests/test_faults.py tests/test_resync.py tests/test_abuse.py tests/test_scale.py \\
        tests/test_haproxy.py tests/test_fuzz.py tests/test_tls_and_limits.py
    .venv/bin/python -m loadtest.reliability /tmp/rel.jsonl > docs/reliability.md

| fault or abuse | what users see | measured recovery | messages lost |
| --- | --- | --- | --- |
"""


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    sys.stdout.write(HEADER)
    for row in rows:
        sys.stdout.write(f"| {row['case']} | {row['users_see']} | {row['recovery']} | {row['lost']} |\n")


if __name__ == "__main__":
    main(sys.argv[1])
