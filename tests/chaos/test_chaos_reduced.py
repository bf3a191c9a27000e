"""The reduced chaos run (issue 4): the fast scenarios, 100 tasks per variant (200 per
scenario: the fault run and its negative control). F15-F17 (issue 17) send 100 HTTP requests
instead; their rows account the keys whose order row committed or that got a 2xx.

It runs ``python -m tests.chaos`` (what ``./dev chaos --reduced`` runs) in a subprocess: the
harness starts its own Postgres, Redis and workers and must not share this process' settings.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.scenarios import FAST

pytestmark = pytest.mark.worker

ROOT = Path(__file__).resolve().parents[2]
TASKS_PER_VARIANT = 100


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("chaos") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    # Tasks long enough that the pool is busy when a fault lands: with 20-200 ms tasks on a
    # loaded machine, F1's kills could all hit idle processes and its control would miss.
    env.update(CHAOS_WORK_MIN="0.15", CHAOS_WORK_MAX="0.4")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--reduced", "--tasks", str(TASKS_PER_VARIANT), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    print(proc.stdout)
    print(proc.stderr[-5000:], file=sys.stderr)
    assert out.exists(), proc.stderr[-5000:]
    return dict(json.loads(out.read_text()))


def rows(run: dict[str, Any], expect: str) -> list[dict[str, Any]]:
    return [r for r in run["rows"] if r["expect"] == expect]


def test_every_fast_scenario_ran_with_its_control(reduced_run: dict[str, Any]) -> None:
    ran = {(r["scenario"], r["variant"]) for r in reduced_run["rows"]}
    assert ran == {(sid, v) for sid in FAST for v in ("fault", "control")}
    for row in reduced_run["rows"]:
        if row["requests"]:  # F15-F17: every request sent; a request that never committed is not accounted
            assert row["requests"] == TASKS_PER_VARIANT, row
            assert 0 < row["attempted"] <= TASKS_PER_VARIANT, row
        else:
            assert row["attempted"] == TASKS_PER_VARIANT
        assert not row["timed_out"], row
        assert not row["error"], row


def test_faults_lose_nothing_and_duplicate_nothing(reduced_run: dict[str, Any]) -> None:
    for row in rows(reduced_run, "pass"):
        summary = {k: row[k] for k in ("scenario", "variant", "lost", "both", "duplicate_dead_letters",
                                       "duplicate_effects", "reasons")}
        assert row["lost"] == 0, summary
        assert row["both"] == 0, summary
        assert row["duplicate_dead_letters"] == 0, summary
        assert row["duplicate_effects"] == 0, summary
        assert row["succeeded"] + row["dead_lettered"] == row["attempted"], summary


def test_every_negative_control_reports_the_loss(reduced_run: dict[str, Any]) -> None:
    controls = rows(reduced_run, "detect")
    assert {r["scenario"] for r in controls} == set(FAST)
    for row in controls:
        damage = row["lost"] + row["both"] + row["duplicate_dead_letters"] + row["duplicate_effects"]
        assert damage > 0, f"{row['scenario']} control {row['control']} reported no loss: {row}"
