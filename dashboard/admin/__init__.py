"""Django admin registrations, one module per family: dead letters (``dead_letters``), the
read-only models (``readonly``), reprocess policies (``policies``) and the admins of
django-celery-beat and django-celery-results (``celery_apps``). Actions call
``dlq.services`` (one call per row) and report with ``message_user``; no logic lives here.
Rows change only through the services, so that they are validated, versioned and audited.
"""
from __future__ import annotations

from dashboard.admin import celery_apps, policies, readonly
from dashboard.admin.dead_letters import ActionForm, DeadLetterAdmin, EstimatedCountPaginator

__all__ = ["ActionForm", "DeadLetterAdmin", "EstimatedCountPaginator", "celery_apps", "policies", "readonly"]
