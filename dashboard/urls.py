"""Ops pages under /dashboard/."""
from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.overview, name="dashboard-overview"),
    path("ops/broker/", views.broker_panel, name="dashboard-broker"),
    path("dead-letters/", views.dead_letter_list, name="dashboard-dead-letters"),
    path("dead-letters/bulk/", views.bulk, name="dashboard-bulk"),
    path("dead-letters/<int:pk>/", views.dead_letter_detail, name="dashboard-detail"),
    path("dead-letters/<int:pk>/status/", views.dead_letter_status, name="dashboard-detail-status"),
    path("dead-letters/<int:pk>/edit/", views.dead_letter_edit, name="dashboard-edit"),
    path("dead-letters/<int:pk>/requeue/", views.dead_letter_requeue, name="dashboard-requeue"),
    path("dead-letters/<int:pk>/discard/", views.dead_letter_discard, name="dashboard-discard"),
    path("dead-letters/<int:pk>/resolve/", views.dead_letter_resolve, name="dashboard-resolve"),
    path("groups/", views.group_list, name="dashboard-groups"),
    path("groups/<str:fingerprint>/", views.group_detail, name="dashboard-group"),
    path("jobs/", views.job_list, name="dashboard-jobs"),
    path("jobs/<int:pk>/", views.job_detail, name="dashboard-job"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="dashboard-job-progress"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="dashboard-job-cancel"),
    path("schedules/", views.schedule_list, name="dashboard-schedules"),
    path("policies/", views.policy_list, name="dashboard-policies"),
    path("policies/new/", views.policy_save, name="dashboard-policy-new"),
    path("policies/<int:pk>/", views.policy_save, name="dashboard-policy-save"),
    path("schedules/<int:pk>/<str:verb>/", views.schedule_action, name="dashboard-schedule-action"),
    path("audit/", views.audit_list, name="dashboard-audit"),
]
