"""F14, two beats: two real ``celery beat`` processes and a periodic task firing ``chaos.tick``
every second; the leading beat is SIGKILLed and restarted while they run. Its control runs
django-celery-beat's plain scheduler (no leader lock). The row counts beat ticks, not
published tasks (``account_ticks``).

Django models and ``dlq.beat`` are imported inside the functions: this module is imported
before the harness has set Django up.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from tests.chaos.accounting import Row
from tests.chaos.run import Run, Variant
from tests.chaos.services import redis_client, sql

TICK_ENTRY = "chaos: tick every 1s"
TICK_EVERY = 1
PLAIN_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
BEAT_ENV = {"DLQ_BEAT_LOCK_TTL": "3"}


def kill_beat_leader(every: float, seconds: float) -> Callable[[Run], None]:
    """F14: SIGKILL the leading beat's process group every ``every`` s and start it again (it
    comes back as the standby, so leadership alternates); ``seconds`` in all, then both beats
    are stopped. Without a leader lock (the control) the beats are killed in turn."""
    def fault(run: Run) -> None:
        from dlq.beat import LOCK_KEY

        started = time.monotonic()
        next_kill, killed_at = started + every, None
        leader: str | None = None
        while time.monotonic() - started < seconds and run.sleep(0.25):
            try:
                value = redis_client(run.rd).get(LOCK_KEY)
            except Exception:
                continue
            token = value.decode() if value else None
            if token and token != leader:
                leader = token
                run.counts["leaders"] += 1
                took = f" after {time.monotonic() - killed_at:.1f}s" if killed_at is not None else ""
                run.log(f"beat leader {token}{took}")
                killed_at = None
            if time.monotonic() < next_kill:
                continue
            if token:
                pid = int(token.split(":")[1])
                victim = next((b for b in run.beats if b.pid == pid and b.alive), None)
                if victim is None:  # the lock still names the beat killed last: no takeover yet
                    next_kill = time.monotonic() + 1
                    continue
            else:  # no leader lock (the control)
                victim = run.beats[run.counts["kills"] % len(run.beats)]
                pid = victim.pid or 0
            run.restart_beat(victim)
            run.counts["kills"] += 1
            killed_at, next_kill = time.monotonic(), time.monotonic() + every
            run.log(f"SIGKILL beat {pid} ({'the leader' if token else 'no leader lock'}); restarted as {victim.pid}")
        run.stop_beats()
    return fault


def two_beats(scheduler: str | None) -> Callable[[Run], None]:
    """A periodic task firing ``chaos.tick`` every second, then two beat processes
    (``scheduler`` None: the one the settings select, ``dlq.beat:LeaderDatabaseScheduler``)."""
    def before(run: Run) -> None:
        from django.db import close_old_connections
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        close_old_connections()  # Postgres may have been restarted by an earlier scenario
        every, _ = IntervalSchedule.objects.get_or_create(every=TICK_EVERY, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.update_or_create(name=TICK_ENTRY, defaults={
            "task": "chaos.tick", "interval": every, "args": json.dumps([run.label]), "enabled": True,
            "last_run_at": None, "total_run_count": 0})
        for _ in range(2):
            run.new_beat(scheduler, BEAT_ENV)
        run.log(f"two beats ({scheduler or 'the settings scheduler'}), {TICK_ENTRY}")
    return before


def remove_tick_entry(run: Run) -> None:
    from django.db import close_old_connections
    from django_celery_beat.models import PeriodicTask

    close_old_connections()
    PeriodicTask.objects.filter(name=TICK_ENTRY).delete()


def account_ticks(*, leader_lock: bool) -> Callable[[Run, Row], None]:
    """F14's row: attempted = distinct scheduled times, succeeded = those that ran (all of
    them: a tick that beat never sent leaves no trace), dup SE = scheduled times that ran more
    than once. A message without a scheduled time (the control's plain scheduler) counts in
    the second it ran in. Slots skipped while a standby takes over are expected (beat does
    not catch up) and reported in the notes, not as lost."""
    def account(run: Run, row: Row) -> None:
        slots: dict[int, list[float]] = {}
        untimed = 0
        for scheduled_at, at in sql(run.pg, "SELECT scheduled_at, extract(epoch FROM at)::float8 FROM chaos_tick "
                                            "WHERE name = %s ORDER BY at", run.label):
            untimed += scheduled_at is None
            slots.setdefault(int(at) if scheduled_at is None else int(scheduled_at), []).append(float(at))
        runs = sum(len(ats) for ats in slots.values())
        row.attempted = row.succeeded = len(slots)
        duplicated = sorted(slot for slot, ats in slots.items() if len(ats) > 1)
        row.duplicate_effects = len(duplicated)
        if duplicated:
            row.examples["dup SE"] = [str(slot) for slot in duplicated[:5]]
        firsts = sorted(min(ats) for ats in slots.values())
        gaps = [b - a for a, b in zip(firsts, firsts[1:], strict=False)]
        period = statistics.median(gaps) if gaps else float(TICK_EVERY)
        skipped = sum(max(0, round(gap / period) - 1) for gap in gaps)
        ignored = sum(w.log().count("beat.duplicate_tick_skipped") for w in run.workers)
        kills, leaders = run.counts["kills"], run.counts["leaders"]
        if leader_lock:
            row.notes = (f"{kills} leader kills, {leaders} leaderships; {skipped} scheduled slots skipped during "
                         f"takeovers (beat does not catch up; median tick gap {period:.2f}s); {runs} runs; "
                         f"{ignored} duplicate sends ignored by before_start")
        else:
            row.notes = (f"no leader lock: {kills} beat kills; {runs} runs in {len(slots)} slots (the second each "
                         f"ran in: the messages carry no scheduled time)")
        if not slots:
            row.error = "no beat tick ran"
        elif not kills:
            row.error = "no beat was killed"
        elif leader_lock and leaders < 2:
            row.error = f"no takeover observed ({leaders} leaders)"
        elif leader_lock and untimed:
            row.error = f"{untimed} ticks without a scheduled time: is the leader scheduler selected?"
        if row.error:
            row.notes = f"{row.error}; {row.notes}"
    return account


def f14(reduced: bool) -> list[Variant]:
    return [
        Variant("fault", "", "pass", kill_beat_leader(8.0, 40.0), before=two_beats(None), after=remove_tick_entry,
                account=account_ticks(leader_lock=True)),
        Variant("control", "no_leader_lock", "detect", kill_beat_leader(8.0, 40.0), before=two_beats(PLAIN_SCHEDULER),
                after=remove_tick_entry, account=account_ticks(leader_lock=False)),
    ]
