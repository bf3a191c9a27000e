"""REST API views: validate input, call one service or selector, serialize output."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import ListSerializer
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from dashboard.api import serializers as s
from dashboard.api.errors import error_response
from dashboard.api.filters import DeadLetterFilterBackend
from dashboard.permissions import RolePermission
from dlq import audit_trail, exports, selectors, services
from dlq.filters import DeadLetterFilterSet, filters_from_query
from dlq.models import DeadLetter, RedriveJob, Role, user_role
from tasks.backpressure import QueueFull
from tasks.errors import ValidationFailed
from tasks.registry import enqueueable_tasks, task_signature

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
EXPORT_MEDIA_TYPES = {"csv": "text/csv", "json": "application/json"}


class ExportNegotiation(DefaultContentNegotiation):
    """The export streams CSV or JSON itself (``format``, else ``Accept``); DRF's renderer,
    JSON, only renders its errors, so no ``Accept`` makes DRF answer 406 before the view runs."""

    def select_renderer(self, request: Request, renderers: Iterable[BaseRenderer],
                        format_suffix: str | None = None) -> tuple[BaseRenderer, str]:
        first = next(iter(renderers))
        return first, first.media_type


def export_format_from_accept(accept: str) -> str:
    """csv unless the client asks for JSON and not CSV."""
    return "json" if "application/json" in accept and "text/csv" not in accept else "csv"


def media_type_accepted(accept: str, media_type: str) -> bool:
    if not accept.strip():
        return True
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(kinds & {media_type, media_type.split("/")[0] + "/*", "*/*"})


def actor(request: Request) -> str:
    return str(request.user.get_username())


def page_size(request: Request) -> int:
    raw = request.query_params.get("page_size", DEFAULT_PAGE_SIZE)
    try:
        size = int(raw)
    except (TypeError, ValueError):
        size = -1
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationFailed(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}", fields={"page_size": ["invalid"]})
    return size


def validated(serializer_class: type[serializers.Serializer[dict[str, Any]]], data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object", fields={"body": ["must be an object"]})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class DeadLetterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[DeadLetter]):
    permission_classes = [RolePermission]
    filter_backends = [DeadLetterFilterBackend]
    filterset_class = DeadLetterFilterSet
    serializer_class = s.DeadLetterListSerializer
    action_roles = {"bulk": Role.ADMIN, "export": Role.ADMIN}

    def get_throttles(self) -> list[BaseThrottle]:
        # Expensive reads count against their own rates (REST_FRAMEWORK DEFAULT_THROTTLE_RATES).
        if self.action == "export":
            self.throttle_scope = "export"
        elif self.action == "list" and self.request.query_params.get("q"):
            self.throttle_scope = "expensive"
        return super().get_throttles()

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return selectors.dead_letter_list()

    @extend_schema(parameters=[
        OpenApiParameter("cursor", str), OpenApiParameter("page_size", int, description="1 to 500, default 50"),
    ])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        qs = self.filter_queryset(self.get_queryset())  # dlq.filters: 400 invalid_filter for a bad value
        rows, next_cursor, prev_cursor = selectors.dead_letter_page(
            qs, cursor=request.query_params.get("cursor"), size=page_size(request))

        def link(cursor: str | None) -> str | None:
            if cursor is None:
                return None
            params = request.query_params.copy()
            params["cursor"] = cursor
            return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")

        return Response({"next": link(next_cursor), "previous": link(prev_cursor),
                         "results": s.DeadLetterListSerializer(rows, many=True).data})

    @extend_schema(responses=s.DeadLetterDetailSerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(s.DeadLetterDetailSerializer(selectors.dead_letter_get(id=pk)).data)

    @extend_schema(request=s.DeadLetterUpdateSerializer, responses=s.DeadLetterDetailSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        data = validated(s.DeadLetterUpdateSerializer, request.data)
        row = selectors.dead_letter_get(id=pk)
        changes = {key: data[key] for key in ("args", "kwargs", "queue") if key in data}
        updated = services.dead_letter_update(dead_letter_id=row.pk, actor=actor(request), role=user_role(request.user),
                                              reason=data["reason"],
                                              version=data["version"], **changes)
        return Response(s.DeadLetterDetailSerializer(selectors.dead_letter_get(id=updated.pk)).data)

    @extend_schema(request=s.RequeueSerializer, responses={202: dict})
    @action(detail=True, methods=["post"])
    def requeue(self, request: Request, pk: str | None = None) -> Response:
        data = validated(s.RequeueSerializer, request.data if request.data != {} else {})
        row = selectors.dead_letter_get(id=pk)
        task_id = services.dead_letter_requeue(dead_letter_id=row.pk, actor=actor(request), role=user_role(request.user),
                                               reason=data.get("reason", ""), queue=data.get("queue"),
                                               version=data.get("version"))
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.ReasonSerializer, responses=s.DeadLetterDetailSerializer)
    @action(detail=True, methods=["post"])
    def discard(self, request: Request, pk: str | None = None) -> Response:
        data = validated(s.ReasonSerializer, request.data)
        row = selectors.dead_letter_get(id=pk)
        services.dead_letter_discard(dead_letter_id=row.pk, actor=actor(request), reason=data["reason"])
        return Response(s.DeadLetterDetailSerializer(selectors.dead_letter_get(id=row.pk)).data)

    @extend_schema(request=s.ReasonSerializer, responses=s.DeadLetterDetailSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        data = validated(s.ReasonSerializer, request.data)
        row = selectors.dead_letter_get(id=pk)
        services.dead_letter_resolve(dead_letter_id=row.pk, actor=actor(request), reason=data["reason"])
        return Response(s.DeadLetterDetailSerializer(selectors.dead_letter_get(id=row.pk)).data)

    @extend_schema(responses=s.EventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        events = selectors.dead_letter_events(dead_letter_id=pk)[:1000]
        return Response({"results": s.EventSerializer(events, many=True).data})

    @extend_schema(request=s.BulkSerializer, responses={200: dict, 202: dict})
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        data = validated(s.BulkSerializer, request.data)
        selection = {"action": data["action"], "ids": data.get("ids"), "filters": data.get("filter")}
        if data["dry_run"]:
            return Response(services.dead_letters_bulk_preview(**selection))
        job = services.dead_letters_bulk_start(actor=actor(request), reason=data["reason"],
                                               rate_limit=data.get("rate_limit"), queue=data.get("queue"), **selection)
        return Response({"job": s.RedriveJobSerializer(job).data}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=[OpenApiParameter("format", str, enum=[*exports.FORMATS])], responses={200: bytes},
                   filters=True)  # the list's filters (dlq.filters)
    @action(detail=False, methods=["get"], content_negotiation_class=ExportNegotiation)
    def export(self, request: Request) -> StreamingHttpResponse | Response:
        fmt = request.query_params.get("format") or export_format_from_accept(request.META.get("HTTP_ACCEPT", ""))
        if fmt not in exports.FORMATS:
            raise ValidationFailed("format must be csv or json", fields={"format": ["csv or json"]})
        accept = request.META.get("HTTP_ACCEPT", "")
        if not media_type_accepted(accept, EXPORT_MEDIA_TYPES[fmt]):
            return error_response("not_acceptable", f"format={fmt} is {EXPORT_MEDIA_TYPES[fmt]}, which the Accept "
                                  f"header ({accept[:200]}) does not allow", status.HTTP_406_NOT_ACCEPTABLE)
        filters = filters_from_query(request.query_params)
        selectors.clean_filters(filters)  # a bad filter is a 400 before streaming starts
        response = StreamingHttpResponse(exports.export_dead_letters(actor=actor(request), filters=filters, fmt=fmt),
                                         content_type="text/csv" if fmt == "csv" else "application/json")
        response["Content-Disposition"] = f'attachment; filename="dead-letters.{fmt}"'
        return response


class JobPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


class RedriveJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[RedriveJob]):
    permission_classes = [RolePermission]
    serializer_class = s.RedriveJobSerializer
    pagination_class = JobPagination
    action_roles = {"cancel": Role.ADMIN}

    def get_queryset(self) -> QuerySet[RedriveJob]:
        return selectors.redrive_job_list()

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return Response(s.RedriveJobSerializer(selectors.redrive_job_get(id=pk)).data)

    @extend_schema(request=None, responses=s.RedriveJobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = selectors.redrive_job_get(id=pk)
        return Response(s.RedriveJobSerializer(services.redrive_job_cancel(job_id=job.pk, actor=actor(request))).data)


class GroupListView(APIView):
    permission_classes = [RolePermission]
    throttle_scope = "expensive"

    @extend_schema(responses=s.GroupSerializer(many=True))
    def get(self, request: Request) -> Response:
        groups = selectors.failure_groups(filters=filters_from_query(request.query_params))
        return Response({"results": ListSerializer(groups, child=s.GroupSerializer()).data})


class StatsView(APIView):
    permission_classes = [RolePermission]
    throttle_scope = "expensive"

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response(selectors.dead_letter_stats())


class AuditEventListView(APIView):
    """Every operator change, newest first: ``AuditEvent`` rows and the dead letters' events."""

    permission_classes = [RolePermission]

    @extend_schema(parameters=[OpenApiParameter(name, str) for name in (*audit_trail.AUDIT_FILTERS, "cursor")]
                   + [OpenApiParameter("page_size", int, description="1 to 500, default 50")],
                   responses=s.AuditEventSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = {key: request.query_params.get(key) for key in audit_trail.AUDIT_FILTERS}
        events, next_cursor = audit_trail.audit_events(filters=filters, cursor=request.query_params.get("cursor"),
                                                     size=page_size(request))
        link = None
        if next_cursor:
            params = request.query_params.copy()
            params["cursor"] = next_cursor
            link = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"next": link, "results": ListSerializer(events, child=s.AuditEventSerializer()).data})


class TaskListView(APIView):
    permission_classes = [RolePermission]

    @extend_schema(responses={200: dict})
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

    @extend_schema(request=s.EnqueueSerializer, responses={202: dict},
                   parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)])
    def post(self, request: Request) -> Response:
        data = validated(s.EnqueueSerializer, request.data)
        key = data.get("idempotency_key")
        header = request.headers.get("Idempotency-Key")
        if header is not None:
            if key is not None and key != header:
                raise ValidationFailed("the Idempotency-Key header and the idempotency_key field differ",
                                       fields={"idempotency_key": ["differs from the header"]})
            key = header
        try:
            enqueued = services.task_enqueue(
                actor=actor(request), role=user_role(request.user), task_name=data["task"], args=data["args"],
                kwargs=data["kwargs"], queue=data.get("queue"), countdown=data.get("countdown"), idempotency_key=key,
                idempotency_scope=f"user:{request.user.pk}")  # one client's keys never answer another's
        except QueueFull as exc:
            return error_response("queue_full", str(exc), status.HTTP_429_TOO_MANY_REQUESTS,
                                  headers={"Retry-After": str(exc.retry_after)})
        return Response({"task_id": enqueued.task_id},
                        status=status.HTTP_202_ACCEPTED if enqueued.written else status.HTTP_200_OK)


class ReprocessPolicyViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Automatic reprocessing policies: viewers read, admins write."""

    permission_classes = [RolePermission]
    serializer_class = s.ReprocessPolicySerializer
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        return selectors.reprocess_policy_list()

    def get_object(self) -> Any:
        return selectors.reprocess_policy_get(id=self.kwargs["pk"])

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = services.reprocess_policy_save(actor=actor(self.request), data=serializer.validated_data)

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = services.reprocess_policy_save(actor=actor(self.request), data=serializer.validated_data,
                                                             policy_id=serializer.instance.pk)

    def perform_destroy(self, instance: Any) -> None:
        services.reprocess_policy_delete(actor=actor(self.request), policy_id=instance.pk)
