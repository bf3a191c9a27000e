from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        # Register the project's tasks in every process (web too), not only in workers
        # where Celery's autodiscovery imports them: the enqueue API looks them up by name.
        from tasks import demo, examples  # noqa: F401
