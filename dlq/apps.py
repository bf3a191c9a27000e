from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DlqConfig(AppConfig):
    name = "dlq"
    verbose_name = "Dead letters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the registry is ready: the housekeeping tasks and the signal receivers
        # use the models (the checks register themselves on import).
        from dlq import checks, tasks  # noqa: F401  (register the checks and the housekeeping tasks)
        from dlq.signals import connect_signals, create_role_groups

        post_migrate.connect(create_role_groups, dispatch_uid="dlq.create_role_groups")
        connect_signals()
