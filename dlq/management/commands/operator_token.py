"""``manage.py operator_token USERNAME --role viewer|operator|admin``: create or update the
user with exactly that role and print its API token as the last line."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from dlq.models import Role
from dlq.roles import ensure_role_groups


class Command(BaseCommand):
    help = "Create or update an operator account with a role and print its API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.OPERATOR.value)
        parser.add_argument("--rotate", action="store_true", help="replace the existing token with a new one")

    @transaction.atomic
    def handle(self, *args: Any, username: str, role: str, rotate: bool, **options: Any) -> None:
        groups = ensure_role_groups()
        user, created = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.remove(*groups.values())
        user.groups.add(groups[role])
        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stderr.write(f"{'created' if created else 'updated'} {username} with role {role}")
        self.stdout.write(token.key)
