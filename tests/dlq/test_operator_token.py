"""``manage.py operator_token``: API tokens issued, listed, expired, rotated and revoked."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from dlq.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def token_of(*args: str) -> str:
    out = io.StringIO()
    call_command("operator_token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def works(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/stats/").status_code


def test_operator_token_creates_and_updates_the_user_and_prints_the_token_last() -> None:
    token = token_of("erin", "--role", "viewer")
    user = get_user_model().objects.get(username="erin")
    stored = ApiToken.objects.get(user=user)
    assert token not in (stored.digest, stored.token_key) and stored.digest != token  # only a digest is kept
    assert token.startswith(stored.token_key)
    assert [g.name for g in user.groups.all()] == ["viewer"]
    assert works(token) == 200
    assert ApiToken.objects.get(user=user).last_used_at is not None

    second = token_of("erin", "--role", "admin")
    assert second != token and works(token) == 200 and works(second) == 200  # a second token, both valid
    assert [g.name for g in user.groups.all()] == ["admin"]
    rotated = token_of("erin", "--role", "admin", "--rotate")
    assert works(token) == 401 and works(second) == 401 and works(rotated) == 200
    assert list(AuditEvent.objects.filter(object_type="token").values_list("action", flat=True).order_by("id")) == [
        "token.issue", "token.issue", "token.revoke", "token.revoke", "token.issue"]


def test_tokens_expire_and_can_be_revoked_and_listed() -> None:
    short = token_of("gil", "--role", "viewer", "--expires", "1h", "--name", "ci")
    forever = token_of("gil", "--role", "viewer", "--expires", "never")
    tokens = {t.token_key: t for t in ApiToken.objects.filter(user__username="gil")}
    assert tokens[short[:15]].expiry is not None and tokens[forever[:15]].expiry is None
    out = io.StringIO()
    call_command("operator_token", "gil", "--list", stdout=out)
    listing = out.getvalue()
    assert short[:15] in listing and "ci" in listing and "expires never" in listing and "last used never" in listing
    ApiToken.objects.filter(token_key=short[:15]).update(expiry=timezone.now() - timedelta(seconds=1))
    assert works(short) == 401  # expired
    assert works(forever) == 200
    call_command("operator_token", "gil", "--revoke", forever[:15], stdout=io.StringIO())
    assert works(forever) == 401
    assert not ApiToken.objects.filter(user__username="gil").exists()
    default = token_of("hal", "--role", "viewer")
    expiry = ApiToken.objects.get(user__username="hal").expiry
    assert expiry is not None and timedelta(days=89) < expiry - timezone.now() <= timedelta(days=90)
    assert works(default) == 200


def test_operator_token_refuses_an_unknown_role() -> None:
    with pytest.raises(CommandError):
        call_command("operator_token", "frank", "--role", "root", stdout=io.StringIO(), stderr=io.StringIO())
