from django.urls import include, path
from rest_framework.routers import DefaultRouter

from dashboard.api import views

router = DefaultRouter(trailing_slash=True)
router.register("dead-letters", views.DeadLetterViewSet, basename="dead-letter")
router.register("redrive-jobs", views.RedriveJobViewSet, basename="redrive-job")
router.register("reprocess-policies", views.ReprocessPolicyViewSet, basename="reprocess-policy")

urlpatterns = [
    path("groups/", views.GroupListView.as_view(), name="api-groups"),
    path("stats/", views.StatsView.as_view(), name="api-stats"),
    path("audit-events/", views.AuditEventListView.as_view(), name="api-audit-events"),
    path("tasks/", views.TaskListView.as_view(), name="api-tasks"),
    path("tasks/enqueue/", views.TaskEnqueueView.as_view(), name="api-tasks-enqueue"),
    path("", include(router.urls)),
]
