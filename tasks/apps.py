from django.apps import AppConfig


class TasksConfig(AppConfig):
    """The task runtime: ``PlatformTask``, ``enqueue()`` and its outbox, the relay, the broker
    plumbing. The demo and example tasks are the ``demo`` app's (development only)."""

    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        from tasks import checks  # noqa: F401  (registers the failure hook's checks)
