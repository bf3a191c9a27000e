"""The scenarios of issue 4: one fault each (F1-F14), each with a negative control that
switches one protection off, so that the harness shows it can see a loss. F15-F17 (issue 17)
fault the front door: a real web server whose view enqueues through the outbox, and the
outbox relays (``tests/chaos/frontdoor.py``).

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

from tests.chaos.frontdoor import Load, LoadResult, account_orders, order_keys
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


# --- F15-F17: the front door -----------------------------------------------------------------
#: Every run of chaos.work is recorded (chaos_run): duplicate deliveries are counted.
FRONTDOOR_ENV = {"CHAOS_COUNT_RUNS": "1"}
#: The relays retry a broker that is down every 2 s at most (the product's default, 30 s, only
#: makes F15's drain start up to 30 s later).
RELAY_ENV = {"OUTBOX_RELAY_BACKOFF_MAX": "2"}
WEB_WORKERS = 4
CLIENT_THREADS = 16
CLIENT_TIMEOUT = 30.0


def frontdoor(*, relays: int, delete_first: bool = False) -> Callable[[Run], None]:
    """``before`` of a front-door variant: the web server and ``relays`` outbox relays."""
    def before(run: Run) -> None:
        run.new_web(WEB_WORKERS)
        for _ in range(relays):
            run.new_relay(delete_first=delete_first, env=RELAY_ENV)
        run.log(f"gunicorn ({WEB_WORKERS} sync workers) on :{run.web.port}, {relays} relay(s)"
                f"{' (delete_first)' if delete_first else ''}")
    return before


def http_load(seconds: float | None) -> Callable[[Run, int], LoadResult]:
    """``n`` POSTs with distinct keys from ``CLIENT_THREADS`` client threads, spread evenly
    over ``seconds`` (None: as fast as the web server answers)."""
    def load(run: Run, n: int) -> LoadResult:
        run.load_keys = order_keys(run.label, n)
        rate = n / seconds if seconds else None
        return Load(run.web.port, run.load_keys, threads=CLIENT_THREADS, rate=rate, timeout=CLIENT_TIMEOUT,
                    inflight=run.inflight).run()
    return load


def broker_down_during_load(seconds: float, *, after: float) -> Callable[[Run], None]:
    """F15: Redis (the broker) stopped ``after`` s into the load, started ``seconds`` later."""
    def fault(run: Run) -> None:
        if run.load_done.wait(after):
            return
        run.log(f"Redis stopped for {seconds}s during the load")
        run.rd.stop()
        run.counts["Redis outages during the load"] += 1
        time.sleep(seconds)
        run.harness.start_redis()
        run.log("Redis back")
    return fault


# Searched in Redis itself: the queue may hold a thousand messages, and the web workers stay
# frozen while the harness looks. Returns the needles found.
_FIND_MESSAGES = """
local hits = {}
for _, name in ipairs(KEYS) do
  local found = name == 'unacked' and redis.call('HVALS', name) or redis.call('LRANGE', name, 0, -1)
  for _, message in ipairs(found) do
    for _, needle in ipairs(ARGV) do
      if not hits[needle] and string.find(message, needle, 1, true) then hits[needle] = true end
    end
  end
end
local out = {}
for needle, _ in pairs(hits) do table.insert(out, needle) end
return out
"""


def in_broker(run: Run, keys: list[str]) -> set[str]:
    """Those of ``keys`` whose message reached Redis (queued, unacked) or already ran."""
    from tests.chaos.harness import QUEUE_LISTS, redis_client

    if not keys:
        return set()
    by_needle = {repr(key): key for key in keys}  # as the message's argsrepr header shows the key
    found = redis_client(run.rd).eval(_FIND_MESSAGES, len(QUEUE_LISTS) + 1, *QUEUE_LISTS, "unacked", *by_needle)
    ran = {key for (key,) in sql(run.pg, "SELECT DISTINCT key FROM chaos_run WHERE key = ANY(%s)", keys)}
    return {by_needle[n.decode()] for n in found} | ran


def aim_web_worker(run: Run, *, relaxed: bool) -> tuple[int | None, str]:
    """Freeze every worker of our gunicorn (SIGSTOP), then pick the one to kill, left frozen:
    one serving a request whose row has committed while its task's message is not in Redis
    yet; ``relaxed``, else one whose row has committed, else one in a request. The others are
    thawed (SIGCONT). A worker's request is found by the client port of the connection it
    holds (``Run.inflight``)."""
    frozen = []
    for pid in run.web.children():  # only children of the master we started
        try:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        except ProcessLookupError:
            pass
    victim, how = None, ""
    try:
        inflight = dict(run.inflight)
        if not inflight or not frozen:
            return None, ""
        keys = sorted(set(inflight.values()))
        committed = {key for (key,) in sql(run.pg, "SELECT key FROM chaos_order WHERE key = ANY(%s)", keys)}
        open_window = committed - in_broker(run, sorted(committed))
        wanted = [("committed but not yet in Redis", open_window)]
        if relaxed:
            wanted += [("committed and in Redis", committed), ("mid-request", set(keys))]
        if not any(group for _, group in wanted):
            return None, ""
        serving = {pid: {inflight[port] for port in run.web.client_ports(pid) if port in inflight} for pid in frozen}
        for label, group in wanted:
            victim = next((pid for pid in run.rng.sample(frozen, k=len(frozen)) if serving[pid] & group), None)
            if victim is not None:
                how = label
                return victim, how
        return None, ""
    finally:
        for pid in frozen:
            if pid != victim:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass


def kill_web_workers(every: tuple[float, float]) -> Callable[[Run], None]:
    """F16: SIGKILL one worker process of our gunicorn every ``every`` s (uniform, from one
    kill's start to the next) while the load runs; the master respawns it.

    Each kill is aimed, until the next one is due, at the moment the dual write loses a task
    (``aim_web_worker``): a worker whose request has committed its row while the task's
    message is not in the broker yet, SIGKILLed while frozen. Every few milliseconds the
    workers are frozen, looked at and thawed until one is found; in the last 40 % of the
    interval a worker whose row committed, or else one in a request, will do; when the time is
    up, any worker is killed. The view is not touched,
    and the rule is the same for the fault and the control; with the outbox the web worker is
    not the one that publishes, so there the moment is rare (the relay is quick) and the kill
    usually lands after the commit, the message already relayed."""
    def fault(run: Run) -> None:
        next_kill = time.monotonic() + 1.0  # the first kill lands early, before a small load is over
        while not run.load_done.wait(max(0.0, next_kill - time.monotonic())):
            start = time.monotonic()
            next_kill = start + run.rng.uniform(*every)
            deadline = next_kill - 0.1  # aimed until the next kill is due: one kill per interval
            relax_at = start + 0.6 * (deadline - start)
            victim, how = None, ""
            while victim is None and time.monotonic() < deadline and not run.load_done.is_set():
                victim, how = aim_web_worker(run, relaxed=time.monotonic() >= relax_at)
                if victim is None:
                    time.sleep(0.003)
            if victim is None:
                children = run.web.children()
                if not children or run.load_done.is_set():
                    continue
                victim, how = run.rng.choice(children), "idle"
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            run.counts["web worker kills"] += 1
            run.counts[f"of them {how}"] += 1
            run.log(f"SIGKILL gunicorn worker {victim} ({how})")
    return fault


def kill_relays(every: tuple[float, float], aim: float = 1.5) -> Callable[[Run], None]:
    """F17: each relay SIGKILLed (its process group) ``every`` s (uniform) after it is up (its
    first heartbeat; a relay starts in 1-3 s on 2 cores) and started again at once, while the
    load runs.

    When a relay is due, the kill is aimed for up to ``aim`` s at a moment it holds a batch
    (between its claim and the end of the batch): it is probed every 2 ms
    (``ChaosRelay.probe``, see ``tests/chaos/relay.py``); caught holding one, it is held there
    and SIGKILLed. A relay asleep on its LISTEN socket holds nothing, and killing it proves
    nothing. Not caught in time: it is killed wherever it is. The same rule applies to the
    fault and to the control."""
    def fault(run: Run) -> None:
        due: list[float | None] = [None for _ in run.relays]
        while not run.load_done.wait(0.05):
            for i, relay in enumerate(run.relays):
                if due[i] is None and relay.ready:
                    due[i] = time.monotonic() + run.rng.uniform(*every)
                at = due[i]
                if at is None or time.monotonic() < at:
                    continue
                deadline = time.monotonic() + aim
                caught = False
                while time.monotonic() < deadline and not run.load_done.is_set():
                    if relay.probe():
                        caught = True
                        break
                    time.sleep(0.002)
                run.restart_relay(relay)
                due[i] = None
                run.counts["relay kills"] += 1
                run.counts["of them holding a batch"] += caught
                run.log(f"SIGKILL relay {relay.label}{' (holding a batch)' if caught else ''}; restarted")
    return fault


def f15(reduced: bool) -> list[Variant]:
    # The load is paced so that it runs before, during and after the outage (5 s of load
    # before it and 5 s after; in the reduced run 1.5 s and 1 s).
    down, after, seconds = (10.0, 1.5, 12.5) if reduced else (30.0, 5.0, 40.0)
    fault = broker_down_during_load(down, after=after)
    return [
        Variant("fault", "", "pass", fault, before=frontdoor(relays=1), load=http_load(seconds),
                account=account_orders("Redis outages during the load")),
        Variant("control", "on_commit_publish", "detect", fault, before=frontdoor(relays=1), load=http_load(seconds),
                account=account_orders("Redis outages during the load")),
    ]


def f16(reduced: bool) -> list[Variant]:
    seconds = 10.0 if reduced else 30.0
    fault = kill_web_workers((1.0, 2.0))
    return [
        Variant("fault", "", "pass", fault, before=frontdoor(relays=1), load=http_load(seconds),
                account=account_orders("web worker kills")),
        Variant("control", "on_commit_publish", "detect", fault, before=frontdoor(relays=1), load=http_load(seconds),
                account=account_orders("web worker kills")),
    ]


# F17 wants its kills to land inside a batch, not in a relay asleep on its LISTEN socket. A
# relay publishes ~30,000 messages/s (batches of 1000 take ~30 ms), so even at the full size
# the relays are idle far more than 99 % of the time, and no pacing or batch size makes random
# kills land in a batch reliably. Hence the aim (``kill_relays``: probe a due relay, kill it
# while it holds a batch). Killed in a batch, the delete-first control loses the batch when the
# broker does not have it yet (about 6 kills in 10; mostly the relay waits for the COMMIT or
# for the broker's reply) and the product republishes it (a duplicate run) when the broker has
# it and the DELETE is not committed: the kill schedule (0.5-1.5 s after a relay is up; a
# relay takes 1-3 s to start) and the paced load (20 s; 15 s reduced, ~8 kills) give enough
# kills for the control to show its loss at 100 requests too. The batch size is the product's
# default (1000): rows that piled up while both relays were restarting go out in one batch.


def f17(reduced: bool) -> list[Variant]:
    seconds = 15.0 if reduced else 20.0
    fault = kill_relays((0.5, 1.5))
    return [
        Variant("fault", "", "pass", fault, before=frontdoor(relays=2), load=http_load(seconds),
                account=account_orders("relay kills")),
        Variant("control", "delete_first", "detect", fault, before=frontdoor(relays=2, delete_first=True),
                load=http_load(seconds), account=account_orders("relay kills")),
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
    #: F15-F17: the HTTP load (``load(run, n)``) that replaces publishing ``n`` tasks.
    load: Callable[[Run, int], LoadResult] | None = None


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
    Scenario("F15", "broker (Redis) down 30 s (10 s in the reduced run) during an HTTP load on the outbox view",
             True, f15, mix=no_tasks, env=FRONTDOOR_ENV),
    Scenario("F16", "gunicorn worker processes SIGKILLed every 1-2 s during an HTTP load", True, f16, mix=no_tasks,
             env=FRONTDOOR_ENV),
    Scenario("F17", "two outbox relays, each SIGKILLed 0.5-1.5 s after it is up and restarted, during an HTTP load",
             True, f17, mix=no_tasks, env=FRONTDOOR_ENV),
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
        load = variant.load
        row = h.run(scenario=scenario.id, variant=variant.name, fault_name=scenario.title,
                    control=variant.control or (variant.note if variant.name != "fault" else ""), specs=specs,
                    fault=variant.fault, expect=variant.expect, env=scenario.env, workers=scenario.workers,
                    timeout=timeout, before=variant.before, after=variant.after, account=variant.account,
                    load=None if load is None else (lambda run, load=load: load(run, n)))  # type: ignore[misc]
        if variant.note and not row.notes:
            row.notes = variant.note
        rows.append(row)
    return rows
