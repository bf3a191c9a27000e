"""F15-F17, the front door: a real web server whose view enqueues through the outbox, and the
outbox relays (``ChaosWeb``, ``ChaosRelay`` in ``tests/chaos/processes.py``), under an HTTP load
(``tests/chaos/load.py``), on the harness' Postgres and Redis.

- the faults: the broker down during the load (F15), web worker processes SIGKILLed (F16),
  relays SIGKILLed (F17), the kills aimed at the moments that can lose a task;
- ``account_orders``: the accounting of these scenarios (see ``docs/reliability.md``): the keys
  to account are those whose ``chaos_order`` row committed plus those that got a 2xx; a key is
  lost when its task left no effect and no dead letter, and a 2xx without a committed row is a
  loss too (the answer lied).
"""
from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

from tests.chaos.accounting import Row
from tests.chaos.load import Load, LoadResult, order_keys
from tests.chaos.run import Run, Variant
from tests.chaos.services import QUEUE_LISTS, redis_client, sql

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


def frontdoor_variants(fault: Callable[[Run], None], seconds: float, proof: str, *, control: str,
                       relays: int = 1) -> list[Variant]:
    """The fault run and its control, both under ``seconds`` of HTTP load; ``proof`` is the
    counter that shows the fault landed (``account_orders``)."""
    return [
        Variant("fault", "", "pass", fault, before=frontdoor(relays=relays), load=http_load(seconds),
                account=account_orders(proof)),
        Variant("control", control, "detect", fault, before=frontdoor(relays=relays, delete_first=control == "delete_first"),
                load=http_load(seconds), account=account_orders(proof)),
    ]


def f15(reduced: bool) -> list[Variant]:
    # The load is paced so that it runs before, during and after the outage (5 s of load
    # before it and 5 s after; in the reduced run 1.5 s and 1 s).
    down, after, seconds = (10.0, 1.5, 12.5) if reduced else (30.0, 5.0, 40.0)
    return frontdoor_variants(broker_down_during_load(down, after=after), seconds, "Redis outages during the load",
                              control="on_commit_publish")


def f16(reduced: bool) -> list[Variant]:
    seconds = 10.0 if reduced else 30.0
    return frontdoor_variants(kill_web_workers((1.0, 2.0)), seconds, "web worker kills", control="on_commit_publish")


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
    return frontdoor_variants(kill_relays((0.5, 1.5)), seconds, "relay kills", control="delete_first", relays=2)


def account_orders(proof: str) -> Callable[[Run, Row], None]:
    """The accounting of a front-door variant (F15-F17), see the module docstring. ``proof``
    names the counter (``Run.counts``) that shows the fault landed while the load ran
    (e.g. ``web worker kills``): without it the variant's zeros prove nothing (ERROR)."""
    def account(run: Run, row: Row) -> None:
        _account(run, row, proof)
    return account


def _account(run: Run, row: Row, proof: str) -> None:
    result: LoadResult = run.load_result or LoadResult()
    committed = {key for (key,) in sql(run.pg, "SELECT key FROM chaos_order")}
    keys = committed | result.ok
    effects: Counter[str] = Counter()
    for key, count in sql(run.pg, "SELECT key, count(*) FROM chaos_effect GROUP BY key"):
        effects[key] = int(count)
    runs: Counter[str] = Counter()
    for key, count in sql(run.pg, "SELECT key, count(*) FROM chaos_run GROUP BY key"):
        runs[key] = int(count)
    dead: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for arg_key, reason in sql(run.pg, "SELECT args->>0, reason FROM dlq_deadletter"):
        dead[arg_key] += 1
        reasons[reason] += 1
    examples: dict[str, list[str]] = {}
    lies = 0
    for key in sorted(keys):
        ok, dl = effects[key] > 0, dead[key] > 0
        lie = key in result.ok and key not in committed
        lies += lie
        row.succeeded += ok
        row.dead_lettered += dl
        found = {"lost": lie or (not ok and not dl), "2xx without a row": lie, "both": ok and dl,
                 "dup DL": dead[key] > 1, "dup SE": effects[key] > 1}
        row.lost += found["lost"]
        row.both += found["both"]
        row.duplicate_dead_letters += found["dup DL"]
        row.duplicate_effects += found["dup SE"]  # every chaos_order task is declared idempotent
        for column, hit in found.items():
            if hit and len(examples.setdefault(column, [])) < 5:
                examples[column].append(key)
    twice = sorted(key for key, n in runs.items() if n > 1)
    row.duplicate_runs = len(twice)
    if twice:
        examples["ran twice"] = twice[:5]
    strays = sorted(set(effects) - keys)  # a task ran for a row that never committed
    if strays:
        examples["ran without a row"] = strays[:5]
    row.attempted = len(keys)
    row.requests = result.sent
    row.reasons = dict(sorted(reasons.items()))
    row.examples = {column: found for column, found in examples.items() if found}
    non_2xx = sum(result.statuses.values())
    statuses = ", ".join(f"{status} x{n}" for status, n in sorted(result.statuses.items()))
    errors = sum(result.errors.values())
    kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(result.errors.items()))
    notes = [f"{result.sent} requests in {result.seconds:.0f}s, {len(result.ok)} 2xx, {len(committed)} rows committed, "
             f"{non_2xx} non-2xx{f' ({statuses})' if statuses else ''}, {errors} connection errors"
             f"{f' ({kinds})' if kinds else ''}"]
    if lies:
        notes.append(f"{lies} 2xx without a committed row")
    extra = sum(n - 1 for n in runs.values() if n > 1)
    notes.append(f"{len(twice)} keys ran more than once ({extra} extra runs)")
    if strays:
        notes.append(f"{len(strays)} tasks ran without a committed row")
    # What the fault did: its total first, then the "of them ..." breakdown.
    parts = [f"{n} {what.removeprefix('of them ')}" for what, n in sorted(run.counts.items(), key=lambda c: -c[1])
             if what.startswith("of them ")]
    for what, n in sorted(run.counts.items()):
        if not what.startswith("of them "):
            notes.append(f"{n} {what}{' (' + ', '.join(parts) + ')' if parts else ''}")
    if result.sent != len(run.load_keys):
        row.error = f"the load sent {result.sent} of {len(run.load_keys)} requests"
    elif not run.counts.get(proof):
        row.error = f"the fault did not land during the load (no {proof})"
    row.notes = "; ".join(([row.error] if row.error else []) + notes)
