"""A JSON parser that turns every malformed body into a 4xx instead of a 500, with the limits
every JSON input has (``dlq.jsonsafe.parse_json``)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from dlq.jsonsafe import parse_json
from tasks.errors import ValidationFailed


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "payload_too_large"


class StrictJSONParser(JSONParser):
    def parse(self, stream: IO[bytes] | None, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:  # any JSON value
        if stream is None:
            return {}
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return parse_json(raw.decode(encoding))
        except UnicodeDecodeError as exc:
            raise ParseError(f"malformed JSON: {exc}") from exc
        except ValidationFailed as exc:
            raise ParseError(exc.message) from exc
