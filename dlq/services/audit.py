"""The audit trail of operator changes that are not a dead letter's own.

``audit_record()`` is called by each service inside the transaction of the change it
describes, so the change and its record commit or roll back together (a dead letter's
changes write ``DeadLetterEvent`` the same way, ``dead_letters.dead_letter_event``). Diffs
are masked (``dlq.masking``).
"""
from __future__ import annotations

from typing import Any

from dlq.masking import mask
from dlq.models import AuditEvent

#: The actor of every change the platform makes by itself (capture, reconciler, policies).
SYSTEM = "system"


def audit_record(*, actor: str, action: str, object_type: str, object_id: object = "", reason: str = "",
                 diff: dict[str, Any] | None = None) -> AuditEvent:
    return AuditEvent.objects.create(actor=str(actor)[:150], action=action, object_type=object_type,
                                     object_id=str(object_id)[:255], reason=(reason or "")[:2000],
                                     diff=mask(diff or {}))
