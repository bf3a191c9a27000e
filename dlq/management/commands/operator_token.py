"""``manage.py operator_token USERNAME --role viewer|operator|admin``: create or update the
user with exactly that role and issue an API token, printed as the last line (the only time
it is shown: the database keeps its digest).

- ``--expires 30d`` (``h``, ``d`` or ``w``; default ``API_TOKEN_TTL_DAYS``) or ``--expires never``;
- ``--rotate``: revoke the user's other tokens first;
- ``--revoke [KEY]``: revoke the user's tokens (or the one whose key starts with KEY), issue none;
- ``--list``: the user's tokens: key start, name, created, expires, last used.
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from dlq.models import Role
from dlq.roles import ensure_role_groups
from dlq.services.tokens import token_issue, token_list, token_revoke

ACTOR = "cli"


def parse_expiry(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``2w``; ``never`` → None."""
    if text == "never":
        return None
    match = re.fullmatch(r"(\d{1,5})([hdw])", text.strip())
    if not match:
        raise CommandError(f"--expires takes e.g. 12h, 30d, 2w or never, not {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(hours=amount) if unit == "h" else timedelta(days=amount * (7 if unit == "w" else 1))


class Command(BaseCommand):
    help = "Create or update an operator account with a role and issue an API token (printed last)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.OPERATOR.value)
        parser.add_argument("--expires", default=None, help="token lifetime: 12h, 30d, 2w or never")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument("--rotate", action="store_true", help="revoke the user's other tokens first")
        parser.add_argument("--revoke", nargs="?", const="", default=None, metavar="KEY",
                            help="revoke the user's tokens (or the one whose key starts with KEY); issue none")
        parser.add_argument("--list", action="store_true", help="list the user's tokens; issue none")

    @transaction.atomic
    def handle(self, *args: Any, username: str, role: str, expires: str | None, name: str, rotate: bool,
               revoke: str | None, list: bool, **options: Any) -> None:
        users = get_user_model().objects
        if revoke is not None or list:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user {username!r}")
            if list:
                for t in token_list(user=user):
                    self.stdout.write(f"{t['key']}…  {t['name'] or '-'}  created {t['created']}  expires {t['expires']}  "
                                      f"last used {t['last_used']}")
                return
            count = token_revoke(user=user, actor=ACTOR, token_key=revoke or None, reason="operator_token --revoke")
            self.stdout.write(f"revoked {count} token(s) of {username}")
            return
        groups = ensure_role_groups()
        user, created = users.get_or_create(username=username, defaults={"is_staff": True})
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.groups.remove(*groups.values())
        user.groups.add(groups[role])
        if rotate:
            token_revoke(user=user, actor=ACTOR, reason="operator_token --rotate")
        ttl = parse_expiry(expires) if expires else None
        issued = token_issue(user=user, actor=ACTOR, expires_in=ttl, never_expires=expires == "never", name=name)
        expiry = issued.token.expiry.isoformat(timespec="seconds") if issued.token.expiry else "never"
        self.stderr.write(f"{'created' if created else 'updated'} {username} with role {role}; "
                          f"token {issued.token.token_key}… expires {expiry}")
        self.stdout.write(issued.key)
