"""The probes: /healthz answers while the process runs, /readyz says whether the database and
the broker are reachable (503 when one is not). /metrics: tests/housekeeping."""
from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from devtools.embedded import free_port
from taskplatform.celery import app

pytestmark = pytest.mark.django_db


def test_healthz_and_readyz(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_unreachable(client: Any, monkeypatch: Any) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(app, "connection_for_write", lambda: Connection(dead_broker))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")
