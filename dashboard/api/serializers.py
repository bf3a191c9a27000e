from __future__ import annotations

from typing import Any

from rest_framework import serializers

from dlq.masking import mask, masked_dead_letter
from dlq.models import BulkAction, DeadLetter, DeadLetterEvent, RedriveJob, ReprocessPolicy
from dlq.selectors import Workflow, dead_letter_workflow
from dlq.services import reprocess_policy_validate
from tasks.errors import ValidationFailed


class StrictJSONField(serializers.JSONField):
    def __init__(self, *, json_type: type, **kwargs: Any) -> None:
        self.json_type = json_type
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, self.json_type):
            raise serializers.ValidationError(f"must be a JSON {'array' if self.json_type is list else 'object'}")
        return data


class MaskedJSONField(serializers.JSONField):
    """Read-only JSON with secret-looking keys masked."""

    def to_representation(self, value: Any) -> Any:
        return mask(value)


#: A queue name is checked in one place, ``tasks.queues.validate_queue`` (the configured queues),
#: by the services every shell calls: here only its type and length.
def queue_field() -> serializers.CharField:
    return serializers.CharField(max_length=255, required=False, help_text="A configured queue (400 unknown_queue otherwise).")


class EnqueueSerializer(serializers.Serializer[dict[str, Any]]):
    task = serializers.CharField(max_length=255)
    args = StrictJSONField(json_type=list, required=False, default=list)
    kwargs = StrictJSONField(json_type=dict, required=False, default=dict)
    queue = queue_field()
    countdown = serializers.FloatField(required=False, min_value=0)
    idempotency_key = serializers.CharField(required=False, max_length=255)


class DeadLetterListSerializer(serializers.ModelSerializer[DeadLetter]):
    """Every value through ``dlq.masking.masked_dead_letter``: the one view of a dead letter
    that leaves the database."""

    args = MaskedJSONField(read_only=True)
    kwargs = MaskedJSONField(read_only=True)

    def to_representation(self, instance: DeadLetter) -> dict[str, Any]:
        data = super().to_representation(instance)
        masked = masked_dead_letter(instance)
        for name in ("exception_message", "traceback", "attempts", "raw_body"):
            if name in data:
                data[name] = getattr(masked, name)
        return data

    class Meta:
        model = DeadLetter
        fields: tuple[str, ...] = ("id", "task_id", "task_name", "queue", "status", "reason", "exception_type", "exception_message",
                  "root_id", "parent_id", "group_id", "args", "kwargs", "retries", "requeue_count", "last_requeued_task_id", "auto_requeue_count",
                  "last_auto_requeued_at", "fingerprint", "first_failed_at", "last_failed_at", "version",
                  "created_at", "updated_at")
        read_only_fields: tuple[str, ...] = fields


class DeadLetterDetailSerializer(DeadLetterListSerializer):
    headers = MaskedJSONField(read_only=True)
    options = MaskedJSONField(read_only=True)
    attempts = serializers.JSONField(read_only=True)
    arguments_stored_as_text = serializers.SerializerMethodField(
        help_text="True when args/kwargs hold values jsonb cannot (NaN, Infinity, NUL, lone surrogates): they are "
                  "then a readable copy, and a requeue sends the exact values kept as text.")
    workflow = serializers.SerializerMethodField(help_text="Its place in a workflow and whether a requeue resumes it.")

    class Meta(DeadLetterListSerializer.Meta):
        fields = (*DeadLetterListSerializer.Meta.fields, "routing_key", "traceback", "attempts", "headers",
                  "options", "raw_body", "content_type", "content_encoding", "arguments_stored_as_text", "workflow")
        read_only_fields = fields

    def get_arguments_stored_as_text(self, obj: DeadLetter) -> bool:
        return obj.raw_arguments is not None

    def get_workflow(self, obj: DeadLetter) -> Workflow:
        return dead_letter_workflow(obj)


class DeadLetterUpdateSerializer(serializers.Serializer[dict[str, Any]]):
    args = StrictJSONField(json_type=list, required=False)
    kwargs = StrictJSONField(json_type=dict, required=False)
    queue = queue_field()
    reason = serializers.CharField(max_length=2000)
    version = serializers.IntegerField(min_value=1)


class ReasonSerializer(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(max_length=2000)


class RequeueSerializer(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    queue = queue_field()
    version = serializers.IntegerField(min_value=1, required=False,
                                       help_text="The version you read: 409 stale_version if the row changed since.")


class BulkSerializer(serializers.Serializer[dict[str, Any]]):
    action = serializers.ChoiceField(choices=BulkAction.choices)
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=10_000)
    # Checked by the bulk service through dlq.filters (the list's filters, the same messages).
    filter = serializers.DictField(required=False, help_text="The list's filters by name, e.g. {\"status\": \"dead\"}.")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    dry_run = serializers.BooleanField(required=False, default=False)
    rate_limit = serializers.FloatField(required=False, min_value=0.001, max_value=1_000_000)
    queue = queue_field()


class EventSerializer(serializers.ModelSerializer[DeadLetterEvent]):
    class Meta:
        model = DeadLetterEvent
        fields = ("id", "actor", "action", "reason", "diff", "created_at")
        read_only_fields = fields


class RedriveJobSerializer(serializers.ModelSerializer[RedriveJob]):
    ids_count = serializers.SerializerMethodField(help_text="How many ids the job was started with (null: a filter).")

    class Meta:
        model = RedriveJob
        # Not the ids themselves (up to 10,000 per job): their count.
        fields = ("id", "action", "status", "actor", "reason", "filters", "ids_count", "queue", "rate_limit", "total",
                  "done", "failed", "error", "created_at", "started_at", "finished_at")
        read_only_fields = fields

    def get_ids_count(self, obj: RedriveJob) -> int | None:
        return len(obj.ids) if obj.ids is not None else None


class AuditEventSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.CharField(help_text="audit:<n> for operator changes, dead_letter:<n> for a dead letter's events.")
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    action = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    reason = serializers.CharField()
    diff = serializers.JSONField()


class GroupSerializer(serializers.Serializer[dict[str, Any]]):
    fingerprint = serializers.CharField()
    task_name = serializers.CharField()
    exception_type = serializers.CharField()
    sample_message = serializers.CharField()
    count = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()


class ReprocessPolicySerializer(serializers.ModelSerializer[ReprocessPolicy]):
    """Reads JSON into typed values; the rules (registered task, one policy per task, ranges,
    known reasons) are the service's, ``dlq.services.reprocess_policy_validate``, which the
    pages and the admin call too. Its field errors come back as this serializer's."""

    task_name = serializers.CharField()
    reasons = serializers.ListField(child=serializers.CharField(), required=False)
    exception_types = serializers.ListField(child=serializers.CharField(), required=False)
    backoff_factor = serializers.FloatField(required=False)
    cooldown_seconds = serializers.IntegerField(required=False)
    max_auto_requeues = serializers.IntegerField(required=False)
    circuit_max_failures_per_minute = serializers.IntegerField(required=False)

    class Meta:
        model = ReprocessPolicy
        fields = ("id", "task_name", "reasons", "exception_types", "cooldown_seconds", "backoff_factor",
                  "max_auto_requeues", "circuit_max_failures_per_minute", "enabled", "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            return reprocess_policy_validate(data=dict(attrs), policy_id=self.instance.pk if self.instance else None)
        except ValidationFailed as exc:
            raise serializers.ValidationError(exc.fields) from None
