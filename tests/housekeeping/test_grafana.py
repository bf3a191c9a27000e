"""The Grafana dashboard only queries metrics that /metrics (or Flower) exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"taskplatform_dead_letters", "taskplatform_spool_entries", "taskplatform_redrive_job_rows",
        "taskplatform_alerts_open", "taskplatform_dead_letters_captured_total", "taskplatform_dead_letters_requeued_total",
        "taskplatform_capture_errors_total", "taskplatform_task_outcomes_total", "taskplatform_queue_depth",
        "taskplatform_queue_high_water_mark", "taskplatform_outbox_rows", "taskplatform_outbox_oldest_age_seconds",
        "taskplatform_outbox_published_total", "taskplatform_spool_quarantined"}


def test_dashboard_queries_known_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/taskplatform.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b(taskplatform_[a-z_]+|flower_[a-z_]+)\b", e)}
    assert names - {"flower_events_total", "flower_worker_online"} <= OURS
    assert names & OURS == OURS  # every metric we export is on the dashboard
    assert len(dashboard["panels"]) >= 8
