"""The role groups and the model permissions each one gets (so the Django admin agrees
with the API). Applied by a data migration and by ``operator_token``."""
from __future__ import annotations

from typing import Any

from celery import Task
from django.contrib.auth.models import Group, Permission

from dlq.models import Role
from tasks.errors import Forbidden, NotFound, ValidationFailed
from tasks.registry import get_task

VIEWER_PERMS = [
    "dlq.view_deadletter", "dlq.view_deadletterevent", "dlq.view_redrivejob", "dlq.view_alert",
    "dlq.view_reprocesspolicy", "dlq.view_auditevent", "dlq.view_quarantinedentry",
    "django_celery_results.view_taskresult", "django_celery_beat.view_periodictask",
]
OPERATOR_PERMS = [*VIEWER_PERMS, "dlq.change_deadletter"]
ADMIN_PERMS = [
    *OPERATOR_PERMS,
    "dlq.add_reprocesspolicy", "dlq.change_reprocesspolicy", "dlq.delete_reprocesspolicy",
    "django_celery_beat.add_periodictask", "django_celery_beat.change_periodictask",
    "django_celery_beat.delete_periodictask", "django_celery_beat.view_intervalschedule",
    "django_celery_beat.add_intervalschedule", "django_celery_beat.view_crontabschedule",
    "django_celery_beat.add_crontabschedule",
]
ROLE_PERMS = {Role.VIEWER: VIEWER_PERMS, Role.OPERATOR: OPERATOR_PERMS, Role.ADMIN: ADMIN_PERMS}


def ensure_role_groups() -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for role, perms in ROLE_PERMS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            found = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found:
                wanted.append(found)
        group.permissions.set(wanted)
        groups[role] = group
    return groups


#: Role ranks: each role has the powers of the ones below it.
RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
#: Tasks nobody runs by name: Celery's own (``celery.map``, ``celery.chord_unlock``, ...) and
#: the platform's housekeeping (``dlq.*``: beat runs them).
INTERNAL_TASK_PREFIXES = ("celery.", "dlq.")


def role_at_least(role: str | None, needed: str) -> bool:
    return role is not None and RANK[Role(role)] >= RANK[Role(needed)]


def runnable_task(name: object, *, role: str | None) -> Task[Any, Any]:
    """The task ``name`` if ``role`` may run it by name: enqueue it, or requeue, edit or bulk
    requeue its dead letters. Operators run the allow-listed tasks (``enqueueable = True``);
    admins, and the system (reprocess policies, which admins set), every registered task but
    Celery's own and the platform's housekeeping. Raises ``ValidationFailed`` (400
    ``unknown_task``) for a name no task has, ``Forbidden`` (403 ``task_not_allowed``) otherwise."""
    try:
        task = get_task(name)
    except NotFound as exc:
        raise ValidationFailed(exc.message, code="unknown_task", fields={"task": ["not a registered task"]}) from None
    if task.name.startswith(INTERNAL_TASK_PREFIXES):
        raise Forbidden(f"{task.name} is run by the platform itself, never by name", code="task_not_allowed")
    if role is not None and not role_at_least(role, Role.ADMIN) and not getattr(task, "enqueueable", False):
        raise Forbidden(f"your role ({role or 'none'}) may run only the allow-listed tasks; {task.name} is not one",
                        code="task_not_allowed")
    return task
