from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from dlq.models import DeadLetter, DeadLetterEvent
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("dlq", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_list_show_discard_resolve_requeue(capsys: Any) -> None:
    a, b = DeadLetterFactory.create_batch(2, kwargs={"token": "secret-value"}, queue="cli-test")
    c = DeadLetterFactory(args=[1], kwargs={"y": 2}, queue="cli-test")
    listing = run("list", "--status", "dead")
    assert len(listing.strip().splitlines()) == 3
    shown = run("show", str(a.pk))
    assert "secret-value" not in shown and json.loads(shown[: shown.rindex("}") + 1])["kwargs"]["token"] == "********"
    run("discard", str(a.pk), "--reason", "noise", "--actor", "ops")
    run("resolve", str(b.pk), "--reason", "fixed by hand")
    out = run("requeue", str(c.pk))
    assert out.split("\t")[0] == str(c.pk)
    assert dict(DeadLetter.objects.values_list("pk", "status")) == {a.pk: "discarded", b.pk: "resolved", c.pk: "requeued"}
    assert DeadLetterEvent.objects.get(dead_letter=a).actor == "ops"
    with pytest.raises(CommandError):
        run("discard", str(a.pk), "--reason", "again")
    call_command("dlq", "export", "--format", "json")
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 3 and "secret-value" not in json.dumps(data)
    with pytest.raises(CommandError):
        run("list", "--status", "zombie")
    from tasks.redis import redis_client

    redis_client().delete("cli-test")
