"""Ops pages under /dashboard/."""
from __future__ import annotations

from django.urls import URLPattern, path

from dashboard.views import audit, bulk, dead_letters, groups, jobs, overview, policies, schedules

urlpatterns: list[URLPattern] = [
    path("", overview.overview, name="dashboard-overview"),
    path("ops/broker/", overview.broker_panel, name="dashboard-broker"),
    path("dead-letters/", dead_letters.dead_letter_list, name="dashboard-dead-letters"),
    path("dead-letters/bulk/", bulk.bulk, name="dashboard-bulk"),
    path("dead-letters/<int:pk>/", dead_letters.dead_letter_detail, name="dashboard-detail"),
    path("dead-letters/<int:pk>/status/", dead_letters.dead_letter_status, name="dashboard-detail-status"),
    path("dead-letters/<int:pk>/edit/", dead_letters.dead_letter_edit, name="dashboard-edit"),
    path("dead-letters/<int:pk>/requeue/", dead_letters.dead_letter_requeue, name="dashboard-requeue"),
    path("dead-letters/<int:pk>/discard/", dead_letters.dead_letter_discard, name="dashboard-discard"),
    path("dead-letters/<int:pk>/resolve/", dead_letters.dead_letter_resolve, name="dashboard-resolve"),
    path("groups/", groups.group_list, name="dashboard-groups"),
    path("groups/<str:fingerprint>/", groups.group_detail, name="dashboard-group"),
    path("jobs/", jobs.job_list, name="dashboard-jobs"),
    path("jobs/<int:pk>/", jobs.job_detail, name="dashboard-job"),
    path("jobs/<int:pk>/progress/", jobs.job_progress, name="dashboard-job-progress"),
    path("jobs/<int:pk>/cancel/", jobs.job_cancel, name="dashboard-job-cancel"),
    path("schedules/", schedules.schedule_list, name="dashboard-schedules"),
    path("policies/", policies.policy_list, name="dashboard-policies"),
    path("policies/new/", policies.policy_save, name="dashboard-policy-new"),
    path("policies/<int:pk>/", policies.policy_save, name="dashboard-policy-save"),
    path("schedules/<int:pk>/<str:verb>/", schedules.schedule_action, name="dashboard-schedule-action"),
    path("audit/", audit.audit_list, name="dashboard-audit"),
]
