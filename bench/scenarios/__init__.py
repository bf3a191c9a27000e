"""The scenarios S1-S7 of issue 8, and S8 of issue 17 (which reworked S1 for the outbox), one
module each (``s1_enqueue`` ... ``s8_relay``); what they share is in ``common`` and ``seed``.
Each takes the run's ``Sizes`` and ``repeat`` and returns report rows; ours and the baseline
run in the same process, on the same services, alternately.

The package is imported once Django is set up (``bench/run.py`` after ``Services.start()``,
the smoke test under pytest-django). Only ``bench.tasks`` (and ``bench.views``, which imports
it) is imported inside the functions that use it: it registers the bench tasks, which belong
in the bench's processes and not in a test process that only reads ``SCENARIOS``.
"""
from __future__ import annotations

from collections.abc import Callable

from bench.harness import Row
from bench.scenarios.common import FULL, QUICK, TINY, Sizes
from bench.scenarios.s1_enqueue import s1
from bench.scenarios.s2_worker import s2
from bench.scenarios.s3_failures import s3
from bench.scenarios.s4_redrive import s4
from bench.scenarios.s5_search import s5
from bench.scenarios.s6_queries import s6
from bench.scenarios.s7_memory import s7
from bench.scenarios.s8_relay import s8

__all__ = ["FULL", "QUICK", "SCENARIOS", "TINY", "Sizes"]

SCENARIOS: dict[str, Callable[[Sizes, int], list[Row]]] = {
    "S1": s1, "S2": s2, "S3": s3, "S4": s4, "S5": s5, "S6": s6, "S7": s7, "S8": s8,
}
