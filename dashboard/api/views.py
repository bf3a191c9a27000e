"""REST API views: validate input, call one service or selector, serialize output."""
from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.serializers import EnqueueSerializer
from dashboard.permissions import RolePermission
from dlq.models import Role
from tasks.enqueue import enqueue
from tasks.registry import bind_arguments, enqueueable_tasks, get_enqueueable_task, task_signature


class TaskListView(APIView):
    permission_classes = [RolePermission]

    def get(self, request: Request) -> Response:
        results = []
        for name, task in enqueueable_tasks().items():
            sig = task_signature(task)
            results.append({
                "name": name,
                "signature": f"{name}{sig}",
                "parameters": [
                    {"name": p.name, "kind": p.kind.name.lower(), "required": p.default is p.empty}
                    for p in sig.parameters.values()
                ],
                "max_retries": task.max_retries,
                "non_retryable": [e.__name__ for e in getattr(task, "non_retryable", ())],
            })
        return Response({"results": results})


class TaskEnqueueView(APIView):
    permission_classes = [RolePermission]
    write_role = Role.OPERATOR

    def post(self, request: Request) -> Response:
        serializer = EnqueueSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = get_enqueueable_task(data["task"])
        bind_arguments(task, data["args"], data["kwargs"])
        task_id = enqueue(task, args=data["args"], kwargs=data["kwargs"],
                          queue=data.get("queue"), countdown=data.get("countdown"))
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)
