from typing import Any

from django.core.management.base import BaseCommand

from dlq.services.schedules import seed_schedules


class Command(BaseCommand):
    help = "Create the platform's beat schedules that are missing (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = seed_schedules()
        self.stdout.write(f"created {len(created)} schedule(s)" + (": " + ", ".join(created) if created else ""))
