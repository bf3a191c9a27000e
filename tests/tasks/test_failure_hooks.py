"""The failure hook goes through settings: the runtime calls the callables they name, and a
name that does not import is refused by ``manage.py check``."""
from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import registry
from django.test import override_settings

from tasks.checks import failure_hooks
from tasks.failures import CapturedFailure, failure_handler, requeued_run_succeeded

CALLS: list[Any] = []


def recording_handler(failure: CapturedFailure) -> str:
    CALLS.append(failure)
    return "recorded"


def recording_success(*, dead_letter_id: int, task_id: str) -> str:
    CALLS.append((dead_letter_id, task_id))
    return "recorded"


def test_the_default_handlers_are_the_dead_letter_capture() -> None:
    from dlq.spool import capture_or_spool

    assert failure_handler() is capture_or_spool


@override_settings(TASK_FAILURE_HANDLER=f"{__name__}.recording_handler",
                   TASK_REQUEUED_SUCCESS_HANDLER=f"{__name__}.recording_success")
def test_the_runtime_calls_what_the_settings_name() -> None:
    CALLS.clear()
    failure = CapturedFailure(task_id="t-1", task_name="x", reason="non_retryable", exception_type="E",
                              exception_message="m")
    assert failure_handler()(failure) == "recorded"
    assert requeued_run_succeeded(dead_letter_id=7, task_id="t-2") == "recorded"
    assert CALLS == [failure, (7, "t-2")]


@pytest.mark.parametrize("name", ["TASK_FAILURE_HANDLER", "TASK_REQUEUED_SUCCESS_HANDLER"])
def test_a_handler_that_does_not_import_fails_the_checks(name: str) -> None:
    assert failure_hooks in registry.registry.get_checks()  # registered: `manage.py check` runs it
    assert failure_hooks(None) == []
    with override_settings(**{name: "dlq.spool.no_such_handler"}):
        errors = failure_hooks(None)
    assert [e.msg.split("=")[0] for e in errors] == [name]
