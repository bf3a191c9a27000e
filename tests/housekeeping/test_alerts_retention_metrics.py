"""Alerts (with a local webhook receiver), retention, metrics, schedules, JSON logs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from dlq.models import Alert, DeadLetter, DeadLetterEvent, RedriveJob
from dlq.services import alerts_check
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A local HTTP server standing in for the alert webhook (the outside world)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.posts.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self) -> list[tuple[str, str]]:
        return [(p["state"], p["alert"]["key"].split(":")[0]) for p in self.posts]


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    r = Receiver()
    settings.DLQ_ALERT_WEBHOOK_URL = r.url
    yield r
    r.server.shutdown()


def test_alerts_fire_once_and_clear(receiver: Receiver, settings: Any) -> None:
    settings.DLQ_ALERT_THRESHOLD = 2
    settings.DLQ_ALERT_GROWTH_THRESHOLD = 3
    rows = DeadLetterFactory.create_batch(4, last_failed_at=timezone.now(), first_failed_at=timezone.now())
    changed = alerts_check()
    assert sorted(k.split(":")[0] for k in changed["opened"]) == ["dlq_size", "growth_rate", "new_group"]
    assert sorted(receiver.states()) == [("open", "dlq_size"), ("open", "growth_rate"), ("open", "new_group")]
    for _ in range(3):  # every minute: still true, nothing new is sent
        assert alerts_check() == {"opened": [], "resolved": []}
    assert len(receiver.posts) == 3
    assert Alert.objects.filter(status="open").count() == 3
    assert all(a.notified_at for a in Alert.objects.all())

    DeadLetter.objects.filter(pk__in=[r.pk for r in rows]).update(status="discarded",
                                                                  last_failed_at=timezone.now() - timedelta(hours=1))
    changed = alerts_check()
    assert len(changed["resolved"]) == 3
    assert sorted(receiver.states()[3:]) == [("resolved", "dlq_size"), ("resolved", "growth_rate"), ("resolved", "new_group")]
    assert Alert.objects.filter(status="open").count() == 0
    # The condition comes back: a new alert, notified once.
    DeadLetterFactory.create_batch(3, exception_message="gateway timeout")
    alerts_check()
    assert Alert.objects.filter(status="open", kind="dlq_size").count() == 1
    assert receiver.states().count(("open", "dlq_size")) == 2


def test_webhook_is_retried_and_a_failed_job_alerts(receiver: Receiver, settings: Any) -> None:
    settings.DLQ_ALERT_THRESHOLD = 10**6
    receiver.fail_next = 2  # two 500s, then the third attempt is delivered
    job = RedriveJob.objects.create(action="requeue", actor="ops", status="failed", error="broker gone",
                                    total=10, done=3, finished_at=timezone.now())
    alerts_check()
    assert [p["alert"]["key"] for p in receiver.posts] == [f"redrive_job_failed:{job.pk}"]
    alert = Alert.objects.get()
    assert alert.kind == "redrive_job_failed" and alert.notified_at and alert.notify_attempts == 1


def test_undeliverable_webhook_is_retried_at_the_next_check(settings: Any) -> None:
    from devtools.embedded import free_port

    settings.DLQ_ALERT_THRESHOLD = 0
    settings.DLQ_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/nobody"
    DeadLetterFactory()
    alerts_check()
    alert = Alert.objects.get(kind="dlq_size")
    assert alert.notified_at is None and alert.notify_attempts == 1 and "webhook failed" in alert.notify_error
    alerts_check()
    assert Alert.objects.get(kind="dlq_size").notify_attempts == 2


def test_prune_deletes_only_old_resolved_and_discarded(settings: Any) -> None:
    from dlq import services

    old = timezone.now() - timedelta(days=40)
    keep = [DeadLetterFactory(status="dead"), DeadLetterFactory(status="requeued"), DeadLetterFactory(status="resolved")]
    old_dead = DeadLetterFactory(status="dead")
    gone = [DeadLetterFactory(status="resolved"), DeadLetterFactory(status="discarded")]
    for row in [old_dead, *gone]:
        DeadLetterEvent.objects.create(dead_letter=row, actor="ops", action="discard", reason="x")
    DeadLetter.objects.filter(pk__in=[old_dead.pk, *[g.pk for g in gone]]).update(updated_at=old)
    assert services.dead_letters_prune(older_than_days=30, batch_size=1) == services.Pruned(count=2, more=False)
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {r.pk for r in keep} | {old_dead.pk}
    assert DeadLetterEvent.objects.count() == 1  # the old dead row keeps its history


def test_metrics_parse_and_move_when_a_dead_letter_is_captured(live_worker: Any, api_client_for: Any, client: Any) -> None:
    from tests.workers import wait_for

    viewer = api_client_for("viewer")

    def sample(name: str, **labels: str) -> float:
        text = viewer.get("/metrics").content.decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    assert client.get("/metrics").status_code == 401
    before_captured = sample("taskplatform_dead_letters_captured_total", task="tasks.demo.divide", reason="non_retryable")
    before_failures = sample("taskplatform_task_outcomes_total", task="tasks.demo.divide", state="FAILURE")
    from demo.tasks import divide

    result = divide.apply_async([1, 0])
    wait_for(lambda: DeadLetter.objects.filter(task_id=result.id).exists(), message="captured")
    assert sample("taskplatform_dead_letters", status="dead", reason="non_retryable", task="tasks.demo.divide") == 1
    wait_for(lambda: sample("taskplatform_dead_letters_captured_total", task="tasks.demo.divide",
                            reason="non_retryable") == before_captured + 1, timeout=15, message="the capture counter flushed")
    wait_for(lambda: sample("taskplatform_task_outcomes_total", task="tasks.demo.divide", state="FAILURE") == before_failures + 1,
             timeout=15, message="the outcome counter flushed")


def test_metrics_bearer_token(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"taskplatform_dead_letters", "taskplatform_spool_entries", "taskplatform_task_outcomes",
            "taskplatform_queue_depth"} <= names


def test_schedules_are_seeded_idempotently() -> None:
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    from dlq.services.schedules import SCHEDULES

    names = {s["name"] for s in SCHEDULES}
    assert names <= set(PeriodicTask.objects.values_list("name", flat=True))  # seeded after migrate
    PeriodicTask.objects.filter(name="dlq: retention prune").update(enabled=False)
    call_command("seed_schedules")
    call_command("seed_schedules")
    assert PeriodicTask.objects.filter(name__in=names).count() == len(names)
    assert not PeriodicTask.objects.get(name="dlq: retention prune").enabled  # an operator's choice is kept
    tasks = set(PeriodicTask.objects.filter(name__in=names).values_list("task", flat=True))
    assert tasks == {"dlq.check_alerts", "dlq.reconcile", "dlq.prune", "dlq.apply_reprocess_policies",
                     "tasks.examples.daily_digest"}


def test_json_logs_carry_the_ids() -> None:
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('dlq').info('dead_letter.requeue', extra={'task_id': 't-1', 'dead_letter_id': 7})")
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "taskplatform.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    line = json.loads(out.stderr.strip().splitlines()[-1])
    assert line["message"] == "dead_letter.requeue" and line["task_id"] == "t-1" and line["dead_letter_id"] == 7
    assert line["level"] == "INFO" and line["logger"] == "dlq"


def test_a_stalled_outbox_opens_an_alert_and_shows_in_the_metrics(receiver: Receiver, settings: Any, client: Any) -> None:
    from django.db import connection

    from tasks.models import OutboxMessage

    settings.OUTBOX_ALERT_AGE_SECONDS = 60
    settings.METRICS_TOKEN = "s3cret"
    # A row the relay set aside (it failed on its own): a relay running beside the tests leaves it.
    row = OutboxMessage.objects.create(task_id="t-waiting", task_name="tasks.demo.add", queue="celery", payload="[[1, 2], {}]",
                                       available_at=timezone.now() + timedelta(hours=1))
    assert alerts_check()["opened"] == []  # young: the relay has not had its chance yet
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tasks_outboxmessage SET created_at = now() - interval '5 minutes' WHERE id = %s", [row.pk])
    assert alerts_check()["opened"] == ["outbox_stalled"]
    alert = Alert.objects.get(key="outbox_stalled", status="open")
    assert alert.details["rows"] == 1 and alert.details["oldest_age_seconds"] >= 300
    assert receiver.states() == [("open", "outbox_stalled")]
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").content.decode()) for s in f.samples}
    assert metrics[("taskplatform_outbox_rows", ())] == 1
    assert metrics[("taskplatform_outbox_oldest_age_seconds", ())] >= 300
    OutboxMessage.objects.all().delete()  # a relay published it
    assert alerts_check()["resolved"] == ["outbox_stalled"]
    assert receiver.states() == [("open", "outbox_stalled"), ("resolved", "outbox_stalled")]
