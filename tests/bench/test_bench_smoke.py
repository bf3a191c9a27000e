"""Every benchmark scenario runs once at a tiny size, so the bench code cannot rot. Numbers
are not checked (benchmarks are not tests); crashes and missing figures are."""
from __future__ import annotations

import json
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
    assert "| S4 |" in proc.stdout and report["machine"]["cores"]
