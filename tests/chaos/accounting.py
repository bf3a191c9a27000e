"""The accounting: one ``Row`` per scenario variant, its verdict, and the per-task accounting of
the published mixes (F1-F13): each task ends with its side effect (``chaos_effect``) or a dead
letter, never neither (lost) nor both, never twice. F14 counts beat ticks instead
(``tests/chaos/beats.py``), F15-F17 the keys of the HTTP load (``tests/chaos/frontdoor.py``).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.embedded import EmbeddedPostgres
from tests.chaos.mixes import TaskSpec
from tests.chaos.services import sql


@dataclass
class Row:
    scenario: str
    variant: str  # "fault" or "control"
    fault: str
    control: str
    attempted: int = 0
    succeeded: int = 0
    dead_lettered: int = 0
    lost: int = 0
    both: int = 0
    duplicate_dead_letters: int = 0
    duplicate_effects: int = 0  # among tasks declared idempotent
    duplicate_effects_not_idempotent: int = 0  # informational: at-least-once delivery made visible
    #: F15-F17 (informational): keys whose task ran more than once (``chaos_run``), e.g. a
    #: batch a killed relay published and another relay published again.
    duplicate_runs: int = 0
    #: F15-F17: HTTP requests sent (``attempted`` is then the keys accounted: rows committed
    #: plus keys answered 2xx).
    requests: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: The keys behind each non-zero failure column (the first few), to trace in the worker logs.
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    timed_out: bool = False
    expect: str = "pass"  # pass, detect (a negative control), broker_loss (F5), not_covered
    #: Set when the variant did not exercise its fault as designed (e.g. no beat tick ran):
    #: its zeros prove nothing, so it neither passes nor counts as a detection.
    error: str = ""
    notes: str = ""

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.both == 0 and self.duplicate_dead_letters == 0 and self.duplicate_effects == 0

    @property
    def verdict(self) -> str:
        if self.expect == "not_covered":
            return "NOT COVERED"
        if self.error:
            return "ERROR"
        if self.expect == "detect":
            return "DETECTED" if not self.clean else "MISSED"
        if self.expect == "broker_loss":
            return "BROKER LOSS" if not self.clean else "no loss"
        return "PASS" if self.clean and not self.timed_out else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean, "verdict": self.verdict}


def account_tasks(pg: EmbeddedPostgres, specs: list[TaskSpec], row: Row) -> Row:
    """Fill ``row`` from what the published ``specs`` left in the database."""
    by_key = {s.key: s for s in specs}
    effects: Counter[str] = Counter()
    for key, count in sql(pg, "SELECT key, count(*) FROM chaos_effect GROUP BY key"):
        effects[key] = int(count)
    dead: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for task_id, arg_key, reason in sql(pg, "SELECT task_id, args->>0, reason FROM dlq_deadletter"):
        key = task_id if task_id in by_key else arg_key
        if key in by_key:
            dead[key] += 1
            reasons[reason] += 1
    row.attempted = len(specs)
    examples: dict[str, list[str]] = {}
    for spec in specs:
        ok, dl = effects[spec.key] > 0, dead[spec.key] > 0
        row.succeeded += ok
        row.dead_lettered += dl
        found = {
            "lost": not ok and not dl,
            "both": ok and dl,
            "dup DL": dead[spec.key] > 1,
            "dup SE": effects[spec.key] > 1 and spec.idempotent,
        }
        row.lost += found["lost"]
        row.both += found["both"]
        row.duplicate_dead_letters += found["dup DL"]
        if effects[spec.key] > 1:
            if spec.idempotent:
                row.duplicate_effects += 1
            else:
                row.duplicate_effects_not_idempotent += 1
        for column, hit in found.items():
            if hit and len(examples.setdefault(column, [])) < 5:
                examples[column].append(spec.key)
    row.reasons = dict(sorted(reasons.items()))
    row.examples = {column: keys for column, keys in examples.items() if keys}
    return row


def dump(rows: list[Row], path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2))
