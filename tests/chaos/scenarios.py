"""The scenarios of issue 4: one fault each (F1-F14), each with a negative control that
switches one protection off, so that the harness shows it can see a loss.

A scenario yields its variants; each variant is one ``Harness.run`` (fresh queues and tables,
fresh workers) and one accounting row.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.harness import VISIBILITY_TIMEOUT, Harness, Row, Run, TaskSpec, sql, task_mix


# --- faults -----------------------------------------------------------------------------------
def kill_children(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        delay = 1.0  # the first fault lands early, before a small backlog is gone
        while run.sleep(delay):
            delay = every
            children = run.worker.children()
            if children:
                # Prefer a process that is running a chaos task right now (the task records
                # its pid): killing an idle one proves nothing, and the control would miss.
                from tests.chaos.harness import redis_client
                from tests.chaos.tasks import BUSY_KEY

                busy = {int(p) for p in redis_client(run.rd).smembers(BUSY_KEY)} & set(children)
                pid = run.rng.choice(sorted(busy) or children)
                os.kill(pid, signal.SIGKILL)  # a pool process of a worker we started
                run.log(f"SIGKILL pool process {pid}")
    return fault


def kill_worker(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        delay = 2.0
        while run.sleep(delay):
            delay = every
            run.worker.kill_all()
            run.log("SIGKILL the whole worker; restarting it")
            run.new_worker()
    return fault


def shutdowns(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        cold, delay = False, 2.0
        while run.sleep(delay):
            delay = every
            sig = signal.SIGQUIT if cold else signal.SIGTERM
            run.log(f"{'cold (SIGQUIT)' if cold else 'warm (SIGTERM)'} shutdown")
            run.worker.signal_main(sig)
            if not run.worker.wait_exit(60):
                run.log("worker did not exit in 60 s; SIGKILL")
            run.worker.stop()
            run.new_worker()
            cold = not cold
    return fault


def restart_redis(*, appendonly: bool, sig: int, fsync: str = "everysec", times: int = 2,
                  every: float = 4.0, down: float = 1.0) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for _ in range(times):
            if not run.sleep(every):
                return
            run.log(f"Redis {signal.Signals(sig).name} (appendonly={appendonly}, fsync={fsync}), down {down}s")
            run.harness.restart_redis(appendonly=appendonly, sig=sig, down=down, fsync=fsync)
    return fault


def no_persistence(run: Run) -> None:
    from tests.chaos.harness import redis_client

    redis_client(run.rd).config_set("appendonly", "no")
    run.harness.rd.appendonly = False


def aof_always(run: Run) -> None:
    from tests.chaos.harness import redis_client

    redis_client(run.rd).config_set("appendfsync", "always")


def postgres_down(seconds: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        if not run.sleep(2):
            return
        run.log(f"Postgres stopped for {seconds}s")
        run.pg.stop()
        time.sleep(seconds)
        run.pg.start()
        run.log("Postgres back")
    return fault


def terminate_connections(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        delay = 1.0
        while run.sleep(delay):
            delay = every
            try:
                killed = sql(run.pg, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", run.pg.database)
                run.log(f"terminated {killed[0][0]} Postgres connections")
            except Exception as exc:
                run.log(f"terminate failed: {exc!r}")
    return fault


def freeze_redis(seconds: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        if not run.sleep(2):
            return
        assert run.rd.proc is not None
        run.log(f"Redis SIGSTOP for {seconds}s")
        os.kill(run.rd.proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(run.rd.proc.pid, signal.SIGCONT)
        run.log("Redis SIGCONT")
    return fault


def broker_down_during_retries(times: int, down: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for _ in range(times):
            if not run.sleep(2.5):
                return
            run.log(f"Redis down {down}s while retries are republished")
            assert run.rd.proc is not None
            run.rd.stop()
            time.sleep(down)
            run.harness.start_redis()
    return fault


def wait_only(seconds: float) -> Callable[[Run], None]:
    """No injected signal: the fault is in the messages (F9/F10); keep the run open."""
    def fault(run: Run) -> None:
        run.sleep(seconds)
    return fault


def kill_beat_leader(every: float, seconds: float) -> Callable[[Run], None]:
    """F14: SIGKILL the leading beat's process group every ``every`` s and start it again (it
    comes back as the standby, so leadership alternates); ``seconds`` in all, then both beats
    are stopped. Without a leader lock (the control) the beats are killed in turn."""
    def fault(run: Run) -> None:
        from dlq.beat import LOCK_KEY
        from tests.chaos.harness import redis_client

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


# --- mixes ------------------------------------------------------------------------------------
def with_kind(specs: list[TaskSpec], every: int, make: Callable[[TaskSpec], TaskSpec]) -> list[TaskSpec]:
    return [make(s) if i % every == 0 else s for i, s in enumerate(specs)]


def countdown_mix(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    specs = task_mix(prefix, n, seed, crash=0, not_idempotent=0)
    countdown = VISIBILITY_TIMEOUT + 10
    return with_kind(specs, 10, lambda s: TaskSpec(s.key, "ok", True, options={"countdown": countdown}))


def slow_mix(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    specs = task_mix(prefix, n, seed, crash=0, not_idempotent=0)
    return with_kind(specs, max(1, n // 8), lambda s: TaskSpec(s.key, "slow", True, param=VISIBILITY_TIMEOUT + 8,
                                                                 options={"soft_time_limit": 60, "time_limit": 70}))


def stubborn_mix(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    specs = task_mix(prefix, n, seed)
    limits = {"soft_time_limit": 1, "time_limit": 2}
    return with_kind(specs, 10, lambda s: TaskSpec(s.key, "stubborn", s.idempotent, param=10, options=limits))


def retry_heavy_mix(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    return task_mix(prefix, n, seed, retry=0.6, fail=0.1, crash=0.0)


def failing_mix(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    return task_mix(prefix, n, seed, fail=0.4, retry=0.2)


def message_mix(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    specs = task_mix(prefix, n, seed)
    specs = with_kind(specs, 10, lambda s: TaskSpec(s.key, "unknown", s.idempotent))
    return [TaskSpec(s.key, "pickle", s.idempotent) if i % 10 == 5 else s for i, s in enumerate(specs)]


def no_tasks(prefix: str, n: int, seed: Any) -> list[TaskSpec]:
    """F14: nothing is published; beat is the load."""
    return []


# --- F14: two beats ---------------------------------------------------------------------------
TICK_ENTRY = "chaos: tick every 1s"
TICK_EVERY = 1
PLAIN_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
BEAT_ENV = {"DLQ_BEAT_LOCK_TTL": "3"}


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
        gaps = [b - a for a, b in zip(firsts, firsts[1:])]
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


# --- scenarios --------------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    control: str
    expect: str
    fault: Callable[[Run], None] | None
    before: Callable[[Run], None] | None = None
    note: str = ""
    after: Callable[[Run], None] | None = None
    #: Replaces the per-task accounting (F14 counts beat ticks, not published tasks).
    account: Callable[[Run, Row], None] | None = None


@dataclass
class Scenario:
    id: str
    title: str
    fast: bool
    variants: Callable[[bool], list[Variant]]  # reduced -> variants
    mix: Callable[[str, int, Any], list[TaskSpec]] = task_mix
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    not_covered: str = ""


def fault_and_control(fault: Callable[[Run], None], control: str, *, control_fault: Callable[[Run], None] | None = None,
                      ) -> Callable[[bool], list[Variant]]:
    return lambda reduced: [
        Variant("fault", "", "pass", fault),
        Variant("control", control, "detect", control_fault or fault),
    ]


def f4(reduced: bool) -> list[Variant]:
    return [
        Variant("fault", "", "pass", restart_redis(appendonly=True, sig=signal.SIGTERM)),
        Variant("control", "no-persistence", "detect", restart_redis(appendonly=False, sig=signal.SIGTERM, times=1),
                before=no_persistence, note="Redis restarted without AOF"),
    ]


def f5(reduced: bool) -> list[Variant]:
    return [
        Variant("no-persistence", "", "broker_loss", restart_redis(appendonly=False, sig=signal.SIGKILL, times=1),
                before=no_persistence, note="what the broker itself loses"),
        Variant("aof-always", "", "pass", restart_redis(appendonly=True, sig=signal.SIGKILL, fsync="always", times=1),
                before=aof_always, note="same kill with appendfsync always"),
    ]


def f6(reduced: bool) -> list[Variant]:
    down = 10.0 if reduced else 30.0
    return [
        Variant("fault", "", "pass", postgres_down(down)),
        Variant("control", "no_spool", "detect", postgres_down(down)),
    ]


def f8(reduced: bool) -> list[Variant]:
    seconds = 20.0 if reduced else 60.0
    return [Variant("fault", "", "pass", freeze_redis(seconds)), Variant("control", "no_capture", "detect",
                                                                          freeze_redis(seconds))]


SCENARIOS: list[Scenario] = [
    Scenario("F1", "SIGKILL a worker pool process every 2 s", True,
             fault_and_control(kill_children(2.0), "early_ack"), env={"CHAOS_MARK_BUSY": "1"}),
    Scenario("F2", "SIGKILL the whole worker every 8 s and restart it", False,
             fault_and_control(kill_worker(8.0), "early_ack")),
    Scenario("F3", "warm (SIGTERM) and cold (SIGQUIT) shutdowns mid-run, alternating every 6 s", False,
             fault_and_control(shutdowns(6.0), "early_ack")),
    Scenario("F4", "Redis restarted (SIGTERM) with AOF on, twice", False, f4),
    Scenario("F5", "Redis SIGKILLed and restarted", False, f5),
    Scenario("F6", "Postgres stopped 30 s (10 s in the reduced run) while tasks fail", True, f6, mix=failing_mix),
    Scenario("F7", "all Postgres connections terminated every 0.7 s", True,
             fault_and_control(terminate_connections(0.7), "no_capture")),
    Scenario("F8", "Redis frozen (SIGSTOP) 60 s", False, f8),
    Scenario("F9", f"countdown {VISIBILITY_TIMEOUT + 10} s > visibility timeout {VISIBILITY_TIMEOUT} s", False,
             fault_and_control(wait_only(1), "not_idempotent"), mix=countdown_mix),
    Scenario("F10", f"runtime {VISIBILITY_TIMEOUT + 8} s > visibility timeout {VISIBILITY_TIMEOUT} s", False,
             fault_and_control(wait_only(1), "not_idempotent"), mix=slow_mix),
    Scenario("F11", "hard time limits (tasks that ignore the soft limit)", True,
             fault_and_control(wait_only(1), "no_capture"), mix=stubborn_mix),
    Scenario("F12", "broker down (4 s, twice) while retries are republished", False,
             fault_and_control(broker_down_during_retries(2, 4.0), "no_capture"), mix=retry_heavy_mix),
    Scenario("F13", "unknown-task and pickle messages in the stream", True,
             fault_and_control(wait_only(1), "no_consumer_capture"), mix=message_mix),
    Scenario("F14", "two beat processes (1 s tick); the leader SIGKILLed every 8 s and restarted, 40 s", False,
             f14, mix=no_tasks),
]
BY_ID = {s.id: s for s in SCENARIOS}
FAST = [s.id for s in SCENARIOS if s.fast]


def run_scenario(h: Harness, scenario: Scenario, n: int, *, reduced: bool) -> list[Row]:
    if scenario.not_covered:
        return [Row(scenario=scenario.id, variant="-", fault=scenario.title, control="-", expect="not_covered",
                    notes=scenario.not_covered)]
    rows = []
    for variant in scenario.variants(reduced):
        specs = scenario.mix(f"{scenario.id}-{variant.name}", n, h.seed)
        timeout = 180.0 + n * 0.15
        row = h.run(scenario=scenario.id, variant=variant.name, fault_name=scenario.title,
                    control=variant.control or (variant.note if variant.name != "fault" else ""), specs=specs,
                    fault=variant.fault, expect=variant.expect, env=scenario.env, workers=scenario.workers,
                    timeout=timeout, before=variant.before, after=variant.after, account=variant.account)
        if variant.note and not row.notes:
            row.notes = variant.note
        rows.append(row)
    return rows
