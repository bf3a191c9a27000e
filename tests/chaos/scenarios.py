"""The scenarios of issue 4: one fault each (F1-F14), each with a negative control that
switches one protection off, so that the harness shows it can see a loss. F15-F17 (issue 17)
fault the front door: a real web server whose view enqueues through the outbox, and the
outbox relays.

This module is the catalogue (``SCENARIOS``) and runs a scenario's variants; the faults and
variants live by family: ``faults.py`` (F1-F13), ``beats.py`` (F14), ``frontdoor.py``
(F15-F17), the published task mixes in ``mixes.py``.

A scenario yields its variants; each variant is one ``Harness.run`` (fresh queues and tables,
fresh workers) and one accounting row.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.accounting import Row
from tests.chaos.beats import f14
from tests.chaos.faults import (
    broker_down_during_retries,
    f4,
    f5,
    f6,
    f8,
    kill_children,
    kill_worker,
    shutdowns,
    terminate_connections,
    wait_only,
)
from tests.chaos.frontdoor import FRONTDOOR_ENV, f15, f16, f17
from tests.chaos.harness import Harness
from tests.chaos.mixes import (
    TaskSpec,
    countdown_mix,
    failing_mix,
    message_mix,
    no_tasks,
    retry_heavy_mix,
    slow_mix,
    stubborn_mix,
    task_mix,
)
from tests.chaos.run import Run, Variant
from tests.chaos.services import VISIBILITY_TIMEOUT


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
