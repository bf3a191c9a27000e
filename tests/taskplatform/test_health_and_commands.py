from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def test_healthz_and_readyz(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_unreachable(client: Any, monkeypatch: Any) -> None:
    from kombu import Connection

    from taskplatform.celery import app
    from taskplatform.embedded import free_port

    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(app, "connection_for_write", lambda: Connection(dead_broker))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")


def test_operator_token_creates_and_updates_the_user_and_prints_the_token_last() -> None:
    out = io.StringIO()
    call_command("operator_token", "erin", "--role", "viewer", stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip().splitlines()[-1]
    user = get_user_model().objects.get(username="erin")
    assert Token.objects.get(user=user).key == token
    assert [g.name for g in user.groups.all()] == ["viewer"]

    out = io.StringIO()
    call_command("operator_token", "erin", "--role", "admin", stdout=out, stderr=io.StringIO())
    assert out.getvalue().strip().splitlines()[-1] == token
    assert [g.name for g in user.groups.all()] == ["admin"]


def test_operator_token_refuses_an_unknown_role() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("operator_token", "frank", "--role", "root", stdout=io.StringIO(), stderr=io.StringIO())
