"""The role groups and the model permissions each one gets (so the Django admin agrees
with the API). Applied by a data migration and by ``operator_token``."""
from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from dlq.models import Role

VIEWER_PERMS = [
    "dlq.view_deadletter", "dlq.view_deadletterevent", "dlq.view_redrivejob", "dlq.view_alert",
    "dlq.view_reprocesspolicy",
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
    groups = {}
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
