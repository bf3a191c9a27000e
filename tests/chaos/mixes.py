"""What a scenario variant publishes: ``TaskSpec``s, one per ``chaos.work`` message, in seeded
mixes. ``task_mix`` is the default (ok, retried, non-retryable and crashing tasks; some not
idempotent); the others change it for the scenarios that need it (see docs/reliability.md).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.services import VISIBILITY_TIMEOUT


@dataclass
class TaskSpec:
    key: str
    kind: str  # ok, retry, fail, crash, slow, stubborn, unknown, pickle
    idempotent: bool = True
    param: float = 0
    options: dict[str, Any] = field(default_factory=dict)


def task_mix(prefix: str, n: int, seed: Any, *, crash: float = 0.02, fail: float = 0.13, retry: float = 0.2,
             not_idempotent: float = 0.2) -> list[TaskSpec]:
    """``n`` seeded tasks: ok, retried, non-retryable and crashing ones; some not idempotent."""
    rng = random.Random(f"{seed}-{prefix}")
    specs = []
    for i in range(n):
        r = rng.random()
        key = f"{prefix}-{i:05d}"
        idempotent = rng.random() >= not_idempotent
        if r < crash:
            specs.append(TaskSpec(key, "crash", idempotent))
        elif r < crash + fail:
            specs.append(TaskSpec(key, "fail", idempotent))
        elif r < crash + fail + retry:
            specs.append(TaskSpec(key, "retry", idempotent, param=rng.choice([1, 2])))
        else:
            specs.append(TaskSpec(key, "ok", idempotent))
    return specs


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
