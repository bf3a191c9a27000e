"""System checks of the task runtime: the failure hook's settings name callables that import.

A typo there would not show until a task died, and then the dead letter would be lost (the
hook would raise inside ``on_failure``): ``manage.py check`` (run by ``migrate`` and at deploy)
refuses it instead.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

HOOK_SETTINGS = ("TASK_FAILURE_HANDLER", "TASK_REQUEUED_SUCCESS_HANDLER")


@register()
def failure_hooks(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    for number, name in enumerate(HOOK_SETTINGS, start=1):
        path = getattr(settings, name, "")
        try:
            hook = import_string(path)
        except ImportError as exc:
            problems.append(Error(f"{name}={path!r} does not import: {exc}", id=f"tasks.E00{number}"))
            continue
        if not callable(hook):
            problems.append(Error(f"{name}={path!r} is not callable", id=f"tasks.E00{number}"))
    return problems
