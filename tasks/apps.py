from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        # Register the demo and example tasks in every process (web too, the enqueue API
        # looks them up by name), and only in development: they crash workers, sleep, charge
        # example orders; production has none of them.
        from django.conf import settings

        if settings.DEVELOPMENT:
            from tasks import demo, examples  # noqa: F401
