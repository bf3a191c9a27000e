"""dlq/services/dead_letters.py: one dead letter's status machine, each change audited in its
own transaction (the API tests drive the same services over HTTP)."""
from __future__ import annotations

import pytest
from django.db import transaction

from dlq import services
from dlq.models import DeadLetterEvent, DeadLetterStatus
from tasks.errors import Conflict, NotFound, ValidationFailed
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db


def test_discard_and_resolve_follow_the_status_machine() -> None:
    dead, requeued = DeadLetterFactory(), DeadLetterFactory(status=DeadLetterStatus.REQUEUED)
    with pytest.raises(ValidationFailed) as caught:
        services.dead_letter_discard(dead_letter_id=dead.pk, actor="ops", reason="  ")
    assert caught.value.code == "reason_required"
    row = services.dead_letter_discard(dead_letter_id=dead.pk, actor="ops", reason=" noise ")
    assert (row.status, row.version) == ("discarded", 2)
    with pytest.raises(Conflict):
        services.dead_letter_discard(dead_letter_id=dead.pk, actor="ops", reason="again")
    with pytest.raises(Conflict):
        services.dead_letter_resolve(dead_letter_id=dead.pk, actor="ops", reason="x")
    assert services.dead_letter_resolve(dead_letter_id=requeued.pk, actor="ops", reason="fixed").status == "resolved"
    with pytest.raises(NotFound):
        services.dead_letter_resolve(dead_letter_id=dead.pk + 1000, actor="ops", reason="x")
    events = list(DeadLetterEvent.objects.order_by("id").values_list("action", "reason", "diff"))
    assert events == [("discard", "noise", {"status": ["dead", "discarded"]}),
                      ("resolve", "fixed", {"status": ["requeued", "resolved"]})]


def test_a_requeued_run_that_succeeded_resolves_its_row_once() -> None:
    row = DeadLetterFactory(status=DeadLetterStatus.REQUEUED, last_requeued_task_id="run-2")
    assert not services.dead_letter_requeued_run_succeeded(dead_letter_id=row.pk, task_id="run-1")
    assert services.dead_letter_requeued_run_succeeded(dead_letter_id=row.pk, task_id="run-2")
    assert not services.dead_letter_requeued_run_succeeded(dead_letter_id=row.pk, task_id="run-2")
    assert DeadLetterEvent.objects.get().actor == "system"


def test_update_checks_version_status_and_arguments() -> None:
    row = DeadLetterFactory(args=[1, 2], kwargs={})
    with pytest.raises(Conflict) as stale:
        services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=7, args=[3, 4])
    assert stale.value.code == "stale_version"
    with pytest.raises(ValidationFailed):
        services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=1, args=[1, 2, 3])
    with pytest.raises(ValidationFailed):
        services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=1, queue="no-such-queue")
    unchanged = services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=1, args=[1, 2])
    assert unchanged.version == 1 and not DeadLetterEvent.objects.exists()  # nothing changed: no event
    edited = services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=1, args=[3, 4])
    assert (edited.args, edited.version) == ([3, 4], 2)
    assert DeadLetterEvent.objects.get().diff == {"args": [[1, 2], [3, 4]]}


def test_requeue_refuses_to_publish_inside_an_open_transaction() -> None:
    row = DeadLetterFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.dead_letter_requeue(dead_letter_id=row.pk, actor="ops")
    row.refresh_from_db()
    assert row.status == "dead"
