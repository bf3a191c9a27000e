"""dlq/services/capture.py: a failure becomes one dead letter (idempotent by task id), values
made storable; a requeued run that fails again returns its own row to ``dead``."""
from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus
from dlq.services import CapturedFailure, dead_letter_capture, stored_arguments
from dlq.services.capture import EXCEPTION_MESSAGE_LIMIT
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db


def failure(**fields: Any) -> CapturedFailure:
    values: dict[str, Any] = {"task_id": str(uuid.uuid4()), "task_name": "tasks.demo.add", "reason": "non_retryable",
                              "exception_type": "ValueError", "exception_message": "x", "args": [1, 2], "kwargs": {}}
    return CapturedFailure(**{**values, **fields})


def test_a_capture_with_nul_and_surrogates_is_stored() -> None:
    task_id = str(uuid.uuid4())
    dead_letter_capture(failure=CapturedFailure(
        task_id=task_id, task_name="tasks.demo.divide", reason="non_retryable", exception_type="ValueError",
        exception_message="bad \x00 \ud800", traceback="Traceback \x00", args=["a\x00", {"k\ud800": "\udfff"}],
        kwargs={"n\x00": 1}, attempts=[{"number": 1, "at": "2025-01-01T00:00:00+00:00", "message": "\x00"}]))
    row = DeadLetter.objects.get(task_id=task_id)
    assert row.args == ["a\\u0000", {"k\\ud800": "\\udfff"}]
    assert row.kwargs == {"n\\u0000": 1}
    assert row.exception_message == "bad \\u0000 \\ud800" and row.traceback == "Traceback \\u0000"
    assert row.attempts[0]["message"] == "\\u0000"
    assert row.raw_arguments is not None  # the exact values, for a requeue


@pytest.mark.django_db(transaction=True)
def test_capture_is_one_statement_and_idempotent_by_task_id() -> None:
    first_failure = failure(task_id="same")
    with CaptureQueriesContext(connection) as queries:
        dead_letter_capture(failure=first_failure)
    # Exactly one statement: INSERT ... ON CONFLICT DO NOTHING (no BEGIN/COMMIT around it).
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]
    assert "ON CONFLICT DO NOTHING" in queries.captured_queries[0]["sql"]
    first = DeadLetter.objects.get()
    dead_letter_capture(failure=failure(task_id="same", exception_message="another"))
    assert list(DeadLetter.objects.values_list("pk", "exception_message")) == [(first.pk, "x")]


def test_long_text_keeps_its_head_and_tail() -> None:
    message = "head " + "x" * (EXCEPTION_MESSAGE_LIMIT * 2) + " tail"
    captured = failure(exception_message=message)
    dead_letter_capture(failure=captured)
    stored = DeadLetter.objects.get(task_id=captured.task_id).exception_message
    assert stored.startswith("head ") and stored.endswith(" tail") and "characters cut" in stored
    assert len(stored) < EXCEPTION_MESSAGE_LIMIT + 100


def test_stored_arguments_keep_the_exact_values_as_text_only_when_needed() -> None:
    assert stored_arguments([1, "a"], {"k": None}) == ([1, "a"], {"k": None}, None)
    args, kwargs, raw = stored_arguments([math.nan], {})
    assert raw is not None and "NaN" in raw and args != [math.nan]


def test_a_requeued_run_that_fails_again_returns_the_same_row_to_dead() -> None:
    row = DeadLetterFactory(status=DeadLetterStatus.REQUEUED, last_requeued_task_id="run-2", requeue_count=1)
    dead_letter_capture(failure=failure(task_id="run-1", dead_letter_id=row.pk))  # an older run: ignored
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.REQUEUED and not DeadLetterEvent.objects.exists()
    dead_letter_capture(failure=failure(task_id="run-2", dead_letter_id=row.pk, exception_type="KeyError",
                                        attempts=[{"number": 1, "at": "2025-01-01T00:00:00+00:00", "message": "again"}]))
    row.refresh_from_db()
    assert (row.status, row.requeue_count, row.exception_type, row.version) == ("dead", 1, "KeyError", 2)
    assert [a["message"] for a in row.attempts] == ["boom", "again"]
    assert DeadLetter.objects.count() == 1
    event = DeadLetterEvent.objects.get()
    assert (event.actor, event.action, event.diff) == ("system", "failed_again", {"status": ["requeued", "dead"]})
