"""Writes on dead letters and everything around them, one module per entity. Each service
owns its transaction and writes its audit record in it; messages are published after commit,
never while a row lock is held.

| module | holds |
| --- | --- |
| ``capture`` | the failure hook's service: a new dead letter, or a requeued run failed again |
| ``dead_letters`` | one dead letter: edit, requeue, discard, resolve |
| ``requeue`` | the message a requeue sends, a chord member's place in its chord |
| ``redrive`` | bulk actions: dry run, start and cancel of a redrive job |
| ``redrive_engine`` | running a job: lease, batches, exactly-once publishing |
| ``reprocess`` | reprocess policies: their rules, changes, and the automatic requeues |
| ``schedules`` | beat schedules: the platform's seed list, enable/disable/run now |
| ``retention`` | retention of every growing table, reconcilers of what a crash left |
| ``alerts`` | the DLQ's own alerts: open, clear, notify |
| ``enqueue`` | a task enqueued by name for a person or a client |
| ``tokens`` | API tokens: issue, list, revoke |
| ``audit`` | the audit record every operator change writes |

Every public service is importable from here (``from dlq import services``); helpers shared
between modules (``dead_letters.dead_letter_lock``, ``redrive_engine.claim``, ...) are
imported from their module.
"""
from __future__ import annotations

from dlq.services.alerts import alert_payload, alerts_check
from dlq.services.audit import SYSTEM, audit_record
from dlq.services.capture import dead_letter_capture, stored_arguments
from dlq.services.dead_letters import (
    dead_letter_discard,
    dead_letter_requeue,
    dead_letter_requeued_run_succeeded,
    dead_letter_resolve,
    dead_letter_update,
)
from dlq.services.enqueue import Enqueued, task_enqueue
from dlq.services.redrive import dead_letters_bulk_preview, dead_letters_bulk_start, redrive_job_cancel
from dlq.services.redrive_engine import already_published, redrive_job_run
from dlq.services.reprocess import (
    reprocess_policies_apply,
    reprocess_policy_delete,
    reprocess_policy_save,
    reprocess_policy_validate,
)
from dlq.services.requeue import RequeueSource, requeue_message
from dlq.services.retention import (
    Pruned,
    dead_letters_prune,
    dead_letters_reconcile_stuck_requeues,
    housekeeping_prune_other_tables,
    redrive_job_fail,
    redrive_jobs_resume_stalled,
)
from dlq.services.schedules import SCHEDULES, periodic_task_run_now, periodic_task_set_enabled, seed_schedules
from dlq.services.tokens import IssuedToken, token_issue, token_list, token_revoke

# The capture service's argument, built by the task runtime: re-exported for its callers.
from tasks.failures import CapturedFailure

__all__ = [
    "SCHEDULES",
    "SYSTEM",
    "CapturedFailure",
    "Enqueued",
    "IssuedToken",
    "Pruned",
    "RequeueSource",
    "alert_payload",
    "alerts_check",
    "already_published",
    "audit_record",
    "dead_letter_capture",
    "dead_letter_discard",
    "dead_letter_requeue",
    "dead_letter_requeued_run_succeeded",
    "dead_letter_resolve",
    "dead_letter_update",
    "dead_letters_bulk_preview",
    "dead_letters_bulk_start",
    "dead_letters_prune",
    "dead_letters_reconcile_stuck_requeues",
    "housekeeping_prune_other_tables",
    "periodic_task_run_now",
    "periodic_task_set_enabled",
    "redrive_job_cancel",
    "redrive_job_fail",
    "redrive_job_run",
    "redrive_jobs_resume_stalled",
    "reprocess_policies_apply",
    "reprocess_policy_delete",
    "reprocess_policy_save",
    "reprocess_policy_validate",
    "requeue_message",
    "seed_schedules",
    "stored_arguments",
    "task_enqueue",
    "token_issue",
    "token_list",
    "token_revoke",
]
