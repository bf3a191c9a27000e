"""Which tasks can be enqueued by name, and checking arguments against a task's signature."""
from __future__ import annotations

import inspect
import json
from typing import Any

from celery import Task, current_app
from django.conf import settings

from tasks.errors import NotFound, ValidationFailed


def get_task(name: object) -> Task[Any, Any]:
    """The registered task ``name`` (any value: API input is checked here), else ``NotFound``."""
    task = current_app.tasks.get(name) if isinstance(name, str) else None
    if task is None:
        raise NotFound(f"unknown task {name!r}", code="unknown_task", fields={"task": ["not a registered task"]})
    return task


def enqueueable_tasks() -> dict[str, Task[Any, Any]]:
    """Allow-listed tasks: project tasks that set ``enqueueable = True``."""
    return {
        name: task
        for name, task in sorted(current_app.tasks.items())
        if getattr(task, "enqueueable", False)
    }


def get_enqueueable_task(name: object) -> Task[Any, Any]:
    if not isinstance(name, str) or name not in enqueueable_tasks():
        raise ValidationFailed(
            f"task {name!r} is not enqueueable", code="unknown_task", fields={"task": ["not an enqueueable task"]}
        )
    return enqueueable_tasks()[name]


def task_signature(task: Task[Any, Any]) -> inspect.Signature:
    try:
        return inspect.signature(task.run, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # annotations that cannot be evaluated here
        return inspect.signature(task.run)


def describe_signature(task: Task[Any, Any]) -> str:
    return f"{task.name}{task_signature(task)}"


def bind_arguments(task: Task[Any, Any], args: Any, kwargs: Any, *, size_limit: bool = True) -> None:
    """Raise ``ValidationFailed`` unless ``args``/``kwargs`` bind to the task's signature (and,
    with ``size_limit``, fit in ``TASK_MAX_ARGUMENTS_BYTES``: the limit of what people send;
    a requeue sends again what was in the broker, whatever its size)."""
    errors: dict[str, list[str]] = {}
    if not isinstance(args, list):
        errors["args"] = ["must be a JSON array"]
    if not isinstance(kwargs, dict):
        errors["kwargs"] = ["must be a JSON object"]
    if errors:
        raise ValidationFailed("arguments have the wrong type", code="invalid_arguments", fields=errors)
    size = len(json.dumps([args, kwargs])) if size_limit else 0
    if size > settings.TASK_MAX_ARGUMENTS_BYTES:
        raise ValidationFailed(
            f"arguments are {size} bytes of JSON; at most {settings.TASK_MAX_ARGUMENTS_BYTES} are accepted "
            "(pass a reference to large data, not the data)",
            code="arguments_too_large", fields={"args": ["too large"]})
    try:
        task_signature(task).bind(*args, **kwargs)
    except TypeError as exc:
        raise ValidationFailed(
            f"arguments do not fit {describe_signature(task)}: {exc}",
            code="invalid_arguments",
            fields={"args": [str(exc)]},
        ) from exc
