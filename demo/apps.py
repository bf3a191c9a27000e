from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"
    verbose_name = "Demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the demo and example tasks in every process that installs the app (web
        # too: the enqueue API and the demo page look them up by name).
        from demo import examples, tasks  # noqa: F401
