"""Fixtures and helpers the page, admin and API tests share."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from dlq.models import Role
from tasks.redis import redis_client
from tests.conftest import make_user

#: Queues the API tests name (added to TASK_QUEUES, emptied first: ``test_queues``).
TEST_QUEUES = ("api-test", "other-q")


def dead_url(pk: int, verb: str = "") -> str:
    """A dead letter's page, or one of its actions (``edit``, ``requeue``, ...)."""
    return f"/dashboard/dead-letters/{pk}/" + (f"{verb}/" if verb else "")


def queue_length(name: str) -> int:
    return int(redis_client().llen(name))


@pytest.fixture
def login(client: Client) -> Callable[..., Client]:
    """``login(role, name=None)``: the test client, logged in as a new user with ``role``."""
    def as_role(role: str | None, name: str | None = None) -> Client:
        user = make_user(name or f"page-{role}", role)
        client.force_login(user)
        return client
    return as_role


@pytest.fixture
def test_queues(settings: Any) -> None:
    """``TEST_QUEUES`` are queues operators may name, and start empty."""
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, *TEST_QUEUES]
    for name in TEST_QUEUES:
        redis_client().delete(name)


@pytest.fixture
def viewer(api_client_for: Any) -> APIClient:
    client: APIClient = api_client_for(Role.VIEWER)
    return client


@pytest.fixture
def admin(api_client_for: Any) -> APIClient:
    client: APIClient = api_client_for(Role.ADMIN)
    return client
