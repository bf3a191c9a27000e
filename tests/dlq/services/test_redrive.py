"""dlq/services/redrive.py: the checks of a bulk action, its dry run, a job's start (its task
sent after commit) and cancellation. Running a job: test_redrive_engine.py."""
from __future__ import annotations

from typing import Any

import pytest

from dlq import services
from dlq.models import AuditEvent, DeadLetterStatus, RedriveJobStatus
from dlq.services import redrive
from tasks.errors import Conflict, ValidationFailed
from tests.factories import DeadLetterFactory


@pytest.mark.django_db
@pytest.mark.parametrize(("arguments", "field"), [
    ({"action": "explode", "ids": [1]}, "action"),
    ({"action": "discard"}, "ids"),
    ({"action": "discard", "ids": [1, True]}, "ids"),
    ({"action": "discard", "ids": list(range(redrive.MAX_BULK_IDS + 1))}, "ids"),
    ({"action": "discard", "filters": {"status": "zombie"}}, "status"),
    ({"action": "discard", "ids": [1], "rate_limit": 0}, "rate_limit"),
    ({"action": "discard", "ids": [1], "rate_limit": True}, "rate_limit"),
    ({"action": "discard", "ids": [1], "queue": "celery"}, "queue"),
    ({"action": "requeue", "ids": [1], "queue": "no-such-queue"}, "queue"),
])
def test_bulk_input_is_checked(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        services.dead_letters_bulk_start(actor="ops", reason="r", **arguments)
    assert caught.value.fields is not None and field in caught.value.fields
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_preview_counts_only_the_rows_the_action_may_move() -> None:
    rows = DeadLetterFactory.create_batch(3, queue="preview-q")
    DeadLetterFactory(queue="preview-q", status=DeadLetterStatus.REQUEUED)
    preview = services.dead_letters_bulk_preview(action="requeue", filters={"queue": "preview-q"}, sample_size=2)
    assert preview["count"] == 3 and len(preview["sample"]) == 2
    assert services.dead_letters_bulk_preview(action="resolve", filters={"queue": "preview-q"})["count"] == 4
    assert services.dead_letters_bulk_preview(action="discard", ids=[rows[0].pk, 10**9])["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_start_sends_the_job_task_after_commit_and_cancel_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(redrive, "redrive_job_dispatch", lambda *, job_id: sent.append(job_id))
    DeadLetterFactory.create_batch(2, queue="start-q")
    job = services.dead_letters_bulk_start(actor="ops", action="discard", reason="noise", filters={"queue": "start-q"})
    assert sent == [job.pk] and (job.status, job.total) == (RedriveJobStatus.PENDING, 2)
    assert AuditEvent.objects.get().action == "job.start"
    assert services.redrive_job_cancel(job_id=job.pk, actor="ops").status == RedriveJobStatus.CANCELLED
    with pytest.raises(Conflict):
        services.redrive_job_cancel(job_id=job.pk, actor="ops")
    assert services.redrive_job_run(job_id=job.pk) is None  # a cancelled job never runs
