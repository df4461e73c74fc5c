"""Every benchmark scenario and the swarm generator run end to end at small sizes.

Their figures are not asserted here (performance is judged side by side in a
full-size run, see docs/benchmarks.md); that they run, measure all systems,
and write their JSON and plot is.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import running_cluster

from loadtest.systems import BENCH_ENV

CHATD = str(Path(sys.executable).parent / "chatd")

SCENARIOS = {
    "fanout": (["--subscribers", "20", "50", "--messages", "10"], {"chatd", "ngircd", "raw"}),
    "e2e": (["--clients", "60", "--channels", "5", "--rates", "20", "40", "--duration", "1", "--senders", "2"],
            {"chatd"}),
    "ingest": (["--users", "50", "--duration", "1", "--batch", "20", "--concurrency", "2"], {"chatd"}),
    "memory": (["--connections", "100"], {"chatd"}),
    "keepalive": (["--requests", "100"], {"chatd"}),
    "highlights": (["--rate", "200", "--duration", "1"], {"highlights on", "highlights off"}),
    "backfill": (["--streams", "20", "--minutes", "90", "--neighbors", "--backfill-workers", "1", "2"], {"chatd"}),
    # The same checkout stands in for another version: the side-by-side path runs.
    "steady": (["--clients", "60", "--channels", "4", "--rates", "20", "--duration", "1", "--senders", "2",
                "--baseline-code", str(Path(__file__).parent.parent), "--baseline-name", "same"],
               {"chatd", "ngircd", "raw", "chatd@same"}),
    "tpp": (["--viewers", "300", "--hot-viewers", "200", "--ordinary-channels", "10", "--hot-rates", "40",
             "--ordinary-rate", "20", "--duration", "1", "--chatters", "10", "--workers", "2"], {"chatd, 2 workers"}),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_bench_scenario_runs_and_writes_json_and_plot(tmp_path, scenario):
    options, systems = SCENARIOS[scenario]
    output = tmp_path / f"{scenario}.json"
    result = subprocess.run(
        [CHATD, "bench", scenario, *options, "--json", str(output)],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["scenario"] == scenario
    assert report["machine"]["cores"] >= 1
    assert {row["system"] for row in report["results"]} == systems
    assert f"scenario: {scenario}" in result.stdout  # the printed table
    assert output.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    # Not on a terminal: progress comes as plain lines on stderr, the last one saying every step is done.
    steps = len(report["results"])
    assert f"bench {scenario}: {steps}/{steps} steps (100 %) in " in result.stderr, result.stderr[-2000:]
    if scenario == "fanout":
        assert all(row["delivered"] == row["expected"] for row in report["results"])
        assert {"chatd/ngircd", "chatd/raw"} <= set(report["ratios"][0])
    if scenario in ("e2e", "steady", "tpp"):
        assert all(row["lost"] == 0 for row in report["results"]), report["results"]
    if scenario == "highlights":
        assert all(row["published"] >= 150 for row in report["results"]), report["results"]
        assert report["detector"]["observe_us_per_message"] > 0
    if scenario == "tpp":
        [row] = report["results"]
        assert row["hot_viewers"] == 200 and row["viewers"] == 300 and row["messages_per_client_write"] >= 1
        assert {"edge", "edge parent", "clue", "exchange", "redis", "load generator"} <= set(row["cpu_s"])
        assert all(hop["samples"] > 0 for hop in row["hops_ms"].values()), row["hops_ms"]
    if scenario == "steady":
        assert all(row["cpu_s_per_1000_deliveries_total"] >= 0 for row in report["results"])
        assert "chatd/ngircd cpu per delivery" in report["ratios"][0]


@pytest.mark.asyncio
async def test_swarm_generator_spreads_connections_over_processes(tmp_path):
    async with running_cluster(tmp_path, edges=1, env=BENCH_ENV) as cluster:
        irc_port, _ = cluster.edge_addresses(0)
        output = tmp_path / "swarm.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.swarm", "--port", str(irc_port), "--connections", "400",
            "--processes", "2", "--channels", "8", "--senders", "2", "--rate", "40", "--duration", "2",
            "--data-dir", str(cluster.data_dir), "--json", str(output),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(output.read_text())
    assert report["connections"] == 400 and report["processes"] == 2
    assert report["delivered"] == report["expected"] > 0
    assert report["lost"] == 0 and report["latency_samples"] > 0
