from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from dlq.models import ApiToken, Role
from dlq.roles import ensure_role_groups
from tests.workers import RelayProcess, Worker


def purge_broker() -> None:
    from taskplatform.celery import app
    from tasks.redis import redis_client

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")
    client = redis_client()
    for key in client.scan_iter("demo:*"):
        client.delete(key)


@pytest.fixture(scope="session")
def worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Worker]:
    """One real prefork worker for the session, consuming the default queue, with the probe
    tasks of the tests (tests/tasks/probe_tasks.py) beside the project's."""
    purge_broker()
    w = Worker(extra_args=["-I", "tests.tasks.probe_tasks"]).start()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def relay(django_db_setup: Any, django_db_blocker: Any) -> Iterator[RelayProcess]:
    """One real outbox relay for the session: it publishes what ``enqueue()`` commits."""
    r = RelayProcess().start()
    yield r
    r.stop()


@pytest.fixture
def live_worker(worker: Worker, relay: RelayProcess, transactional_db: Any) -> Worker:
    """The worker and the relay, with a committed (transactional) database both can see."""
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-2000:]
    assert relay.alive, relay.log()[-2000:]
    return worker


def make_user(username: str, role: str | None) -> Any:
    groups = ensure_role_groups()
    user = get_user_model().objects.create_user(username, password="pw-" + username, is_staff=True)
    if role:
        user.groups.add(groups[role])
    return user


@pytest.fixture
def api_client_for() -> Any:
    def factory(role: str | None) -> APIClient:
        user = make_user(f"user-{role or 'norole'}", role)
        client = APIClient()
        _, key = ApiToken.objects.create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return factory


@pytest.fixture
def operator_client(api_client_for: Any) -> APIClient:
    return api_client_for(Role.OPERATOR)


@pytest.fixture
def broker_down(monkeypatch: Any) -> str:
    """Publishing goes to a broker address where nothing listens (the outage is real: a
    refused TCP connection); returns that URL."""
    from contextlib import contextmanager

    from kombu import Connection

    from devtools.embedded import free_port
    from taskplatform.celery import app

    dead_url = f"redis://127.0.0.1:{free_port()}/0"

    @contextmanager
    def dead_producer(producer: Any = None) -> Iterator[Any]:
        with Connection(dead_url, connect_timeout=0.5, transport_options={"max_retries": 0}) as conn:
            yield conn.Producer()

    monkeypatch.setattr(app, "producer_or_acquire", dead_producer)
    return dead_url
