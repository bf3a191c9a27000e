from django.urls import path

from dashboard.api import views

urlpatterns = [
    path("tasks/", views.TaskListView.as_view(), name="api-tasks"),
    path("tasks/enqueue/", views.TaskEnqueueView.as_view(), name="api-tasks-enqueue"),
]
