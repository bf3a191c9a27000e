"""API tokens (``dlq.ApiToken``, django-rest-knox): issued, listed and revoked here, each
change audited. A token is shown once, when it is issued; the database keeps its digest."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from knox.settings import CONSTANTS

from dlq.models import ApiToken
from dlq.services.audit import audit_record


@dataclass(frozen=True)
class IssuedToken:
    key: str
    token: ApiToken


@transaction.atomic
def token_issue(*, user: AbstractBaseUser, actor: str, expires_in: timedelta | None = None, never_expires: bool = False,
                name: str = "") -> IssuedToken:
    """A new token for ``user``: ``expires_in`` (default ``API_TOKEN_TTL_DAYS``), or none."""
    ttl = None if never_expires else (expires_in or timedelta(days=settings.API_TOKEN_TTL_DAYS))
    token, key = ApiToken.objects.create(user=user, expiry=ttl, name=name[:100])
    audit_record(actor=actor, action="token.issue", object_type="token", object_id=f"{user.get_username()}:{token.token_key}",
                 diff={"expiry": [None, token.expiry.isoformat() if token.expiry else "never"], "name": [None, name]})
    return IssuedToken(key=key, token=token)


@transaction.atomic
def token_revoke(*, user: AbstractBaseUser, actor: str, token_key: str | None = None, reason: str = "") -> int:
    """Revoke ``user``'s tokens (all of them, or the one whose key starts with ``token_key``)."""
    tokens = ApiToken.objects.filter(user=user)
    if token_key:
        tokens = tokens.filter(token_key=token_key[:CONSTANTS.TOKEN_KEY_LENGTH])  # the start `--list` shows
    keys = list(tokens.values_list("token_key", flat=True))
    tokens.delete()
    for key in keys:
        audit_record(actor=actor, action="token.revoke", object_type="token", object_id=f"{user.get_username()}:{key}",
                     reason=reason)
    return len(keys)


def token_list(*, user: AbstractBaseUser) -> list[dict[str, str]]:
    return [{"key": t.token_key, "name": t.name, "created": _iso(t.created), "expires": _iso(t.expiry) or "never",
             "last_used": _iso(t.last_used_at) or "never"}
            for t in ApiToken.objects.filter(user=user).order_by("created")]


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""
