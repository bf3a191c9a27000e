from django.apps import AppConfig


class DlqConfig(AppConfig):
    name = "dlq"
    verbose_name = "Dead letters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from dlq.signals import create_role_groups

        post_migrate.connect(create_role_groups, dispatch_uid="dlq.create_role_groups")
