"""Every benchmark scenario runs once at a tiny size, so the bench code cannot rot. Numbers
are not checked (benchmarks are not tests); crashes and missing figures are."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.worker
def test_every_scenario_runs_once_at_a_tiny_size(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    out = tmp_path / "bench.json"
    # No URLs: the bench starts its own Postgres and Redis on free ports, so it never meets
    # the test database, a running `./dev up`, or another engineer's run.
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--tiny", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert {row["scenario"] for row in report["rows"]} == set(SCENARIOS)
    for row in report["rows"]:
        assert row["ours"], row
        assert all(math.isfinite(x) for x in row["ours"] + row["baseline"]), row
    assert "| S4 |" in proc.stdout and report["machine"]["cores"]

    rows = {(row["scenario"], row["metric"].split(":")[0].split(",")[0]): row for row in report["rows"]}
    # S1: both views ran (rates only: not checked); the statement count is a count, not a timing.
    view = rows["S1", "enqueue from a view (order row + task in one transaction)"]
    assert view["ours"][0] > 0 and view["baseline"][0] > 0
    inserts = rows["S1", "statements per enqueue() inside the caller's transaction"]
    assert inserts["ours"] == [1.0] and inserts["met"] is True, inserts
    # S8: the relay published every row exactly once (the scenario asserts it; the note says so).
    relay = rows["S8", "outbox relay"]
    assert relay["ours"][0] > 0 and relay["baseline"][0] > 0
    assert "each task id exactly once and equal to the outbox's: True" in relay["notes"], relay
    latency = rows["S8", "commit → message in the broker at 500 enqueues/s"]
    assert latency["ours"][0] > 0 and latency["baseline"], latency
