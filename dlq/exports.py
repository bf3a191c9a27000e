"""Streamed exports of dead letters (CSV or JSON), secrets masked. Reads only."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from dlq.masking import mask
from dlq.models import DeadLetter
from dlq.selectors import dead_letter_list

EXPORT_FIELDS = (
    "id", "task_id", "task_name", "queue", "status", "reason", "exception_type", "exception_message",
    "args", "kwargs", "retries", "requeue_count", "first_failed_at", "last_failed_at", "fingerprint", "version",
)
FORMATS = ("csv", "json")


def export_record(row: DeadLetter) -> dict[str, Any]:
    record = {f: getattr(row, f) for f in EXPORT_FIELDS}
    record["args"], record["kwargs"] = mask(row.args), mask(row.kwargs)
    for key in ("first_failed_at", "last_failed_at"):
        record[key] = record[key].isoformat() if record[key] else None
    return record


def export_dead_letters(*, filters: dict[str, Any] | None, fmt: str) -> Iterator[str]:
    """The dead letters matching ``filters``, newest first, streamed."""
    return export_stream(dead_letter_list(filters=filters), fmt)


def export_stream(queryset: QuerySet[DeadLetter], fmt: str) -> Iterator[str]:
    """Yield ``queryset`` as CSV or JSON in chunks; the query streams with a server-side cursor."""
    rows = queryset.only(*EXPORT_FIELDS).order_by("-last_failed_at", "-id").iterator(chunk_size=2000)
    if fmt == "json":
        yield "["
        for n, row in enumerate(rows):
            yield ("," if n else "") + "\n" + json.dumps(export_record(row), ensure_ascii=False)
        yield "\n]\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        record = export_record(row)
        record["args"], record["kwargs"] = json.dumps(record["args"]), json.dumps(record["kwargs"])
        writer.writerow(record)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
