"""Two real beat processes: one run per tick, and a takeover when the leader dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workers import ROOT, database_url, wait_for

pytestmark = pytest.mark.worker
CELERY = str(Path(sys.executable).with_name("celery"))


def start_beat(name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url(), "DLQ_BEAT_LOCK_TTL": "3", "PYTHONUNBUFFERED": "1"}
    log = open(ROOT / ".data" / "test-logs" / f"beat-{name}.log", "ab")
    proc = subprocess.Popen([CELERY, "-A", "taskplatform", "beat", "-l", "info", "--pidfile=", "--max-interval", "1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def test_two_beats_give_one_run_per_tick_and_fail_over(live_worker: Any) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tasks.redis import redis_client

    client = redis_client()
    client.delete("beat-probe:runs", "beat:leader")
    every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="probe every 2s", task="tasks.examples.beat_probe", interval=every)
    (ROOT / ".data" / "test-logs").mkdir(parents=True, exist_ok=True)
    beats = {"a": start_beat("a"), "b": start_beat("b")}
    try:
        wait_for(lambda: len(client.hgetall("beat-probe:runs")) >= 4, timeout=40, message="four ticks")
        leader_pid = int(client.get("beat:leader").decode().split(":")[1])
        leader = next(name for name, p in beats.items() if p.pid == leader_pid)
        before = len(client.hgetall("beat-probe:runs"))
        os.killpg(beats[leader].pid, signal.SIGKILL)  # the leader dies without releasing its lock
        beats[leader].wait(timeout=10)
        wait_for(lambda: len(client.hgetall("beat-probe:runs")) >= before + 4, timeout=40, message="ticks after takeover")
        follower_pid = int(client.get("beat:leader").decode().split(":")[1])
        assert follower_pid != leader_pid
    finally:
        for proc in beats.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
    time.sleep(1)
    runs = {int(k): int(v) for k, v in client.hgetall("beat-probe:runs").items()}
    assert runs and set(runs.values()) == {1}, runs  # never two runs for one scheduled time
    slots = sorted(runs)
    assert all(b - a >= 2 for a, b in zip(slots, slots[1:], strict=False)), slots


def test_a_tick_sent_twice_runs_once(live_worker: Any) -> None:
    """What a frozen leader that wakes up after the takeover would send: the same schedule
    and scheduled time under another task id. Only the first runs; a redelivery of that
    first message (same task id) is not mistaken for a duplicate."""
    from demo.examples import beat_probe
    from tasks.redis import redis_client

    client = redis_client()
    client.delete("beat-probe:runs")
    client.delete("beat:ran:dup-test:1234567890")
    headers = {"dlq_schedule": "dup-test", "dlq_scheduled_at": 1234567890}
    first = beat_probe.apply_async(headers=headers)
    wait_for(lambda: client.hget("beat-probe:runs", "1234567890") == b"1", message="first run")
    beat_probe.apply_async(headers=headers)
    beat_probe.apply_async(headers=headers, task_id=first.id)  # a redelivery of the first message
    time.sleep(2)
    assert client.hget("beat-probe:runs", "1234567890") == b"2"


@pytest.mark.django_db(transaction=True)
def test_a_new_leader_sends_an_overdue_tick_once() -> None:
    """The first ticks after a takeover, in process: the new leader re-reads the schedule and
    sends the overdue entry once, not once per heap rebuild (it used to send it twice, about
    15 ms apart, with the same scheduled time: django-celery-beat rebuilt the heap from
    entries that ``reserve`` had not advanced)."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from dlq.beat import LOCK_KEY, LeaderDatabaseScheduler, scheduled_time
    from taskplatform.celery import app
    from tasks.redis import redis_client

    redis_client().delete(LOCK_KEY)
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="overdue probe", task="tasks.examples.beat_probe", interval=every,
                                last_run_at=timezone.now() - timedelta(seconds=10))
    sent: list[int] = []

    class Recording(LeaderDatabaseScheduler):
        def apply_entry(self, entry: Any, producer: Any = None) -> None:
            if entry.name == "overdue probe":
                sent.append(scheduled_time(entry))
            self._tasks_since_sync += 1
            self._do_sync()

    scheduler = Recording(app=app)
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            time.sleep(max(0.0, min(scheduler.tick(), 0.1)))
        # A schedule change seen while Scheduler.tick rebuilds its heap (another beat saving
        # entries at start-up) leaves django-celery-beat's flag set: the next tick rebuilds
        # the heap from the schedule again, which must not make the slot just sent due again.
        sends = len(sent)
        scheduler._heap_invalidated = True
        scheduler.tick()
    finally:
        scheduler.close()
    assert len(sent) >= 2, sent
    assert len(sent) <= sends + 1 and len(sent) == len(set(sent)), f"a scheduled time was sent twice: {sent}"
