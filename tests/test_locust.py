"""The Locust load test (loadtest/locustfile.py) runs headless against a real cluster."""
from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path

from support import running_cluster

LOCUST = str(Path(sys.executable).parent / "locust")
LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtest" / "locustfile.py"
RUN_TIME = 12
# Run time, plus start-up, the loss-timeout drain and the final CSV write.
LOCUST_TIMEOUT = RUN_TIME + 30


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


async def test_locust_delivers_over_tcp_and_websocket_without_loss(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, edges=1) as cluster:
        irc_port, ws_port = cluster.edge_addresses(0)
        prefix = tmp_path / "locust"
        argv = [
            LOCUST, "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "-u", "20", "-r", "20", "-t", f"{RUN_TIME}s",
            "--host", f"irc://127.0.0.1:{irc_port}", "--ws-host", f"ws://127.0.0.1:{ws_port}",
            "--transport-mix", "0.5", "--channels", "2", "--tpp-share", "0.5",
            # More chatters than the default 1 in 10, so that 20 users talk enough.
            "--config-users", json.dumps({"user_class_name": "Chatter", "weight": 3}),
            "--csv", str(prefix),
        ]
        # Not subprocess.run: the cluster's output pumps share this event loop.
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=tmp_path, env=os.environ | {"CHAT_SECRET": cluster.secret},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), LOCUST_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]

    stats = {(row["Type"], row["Name"]): row for row in read_rows(Path(f"{prefix}_stats.csv"))}
    for kind in ("IRC", "WS"):
        assert int(stats[(kind, "connect")]["Request Count"]) > 0, stats.keys()
        assert int(stats[(kind, "connect")]["Failure Count"]) == 0
    deliveries = sum(int(row["Request Count"]) for (_, name), row in stats.items() if name == "deliver")
    assert deliveries > 0, stats.keys()
    lost = [row for row in read_rows(Path(f"{prefix}_failures.csv")) if row["Name"] == "lost"]
    assert sum(int(row["Occurrences"]) for row in lost) == 0, lost
    summary = [line for line in text.splitlines() if line.startswith("delivered=")]
    assert summary and "lost=0" in summary[-1].split(), text[-3000:]
