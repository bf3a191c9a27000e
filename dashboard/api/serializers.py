from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictJSONField(serializers.JSONField):
    def __init__(self, *, json_type: type, **kwargs: Any) -> None:
        self.json_type = json_type
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, self.json_type):
            raise serializers.ValidationError(f"must be a JSON {'array' if self.json_type is list else 'object'}")
        return data


class EnqueueSerializer(serializers.Serializer[dict[str, Any]]):
    task = serializers.CharField(max_length=255)
    args = StrictJSONField(json_type=list, required=False, default=list)
    kwargs = StrictJSONField(json_type=dict, required=False, default=dict)
    queue = serializers.RegexField(r"^[A-Za-z0-9_.:\-]{1,255}$", required=False)
    countdown = serializers.FloatField(required=False, min_value=0)
    idempotency_key = serializers.CharField(required=False, max_length=255)

    def validate_idempotency_key(self, value: str) -> str:
        raise serializers.ValidationError("idempotency keys are not supported yet (issue 10); omit the field")
