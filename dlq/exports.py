"""Streamed exports of dead letters (CSV or JSON), secrets masked. Reads only."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from dlq.masking import masked_dead_letter
from dlq.models import DeadLetter
from dlq.selectors import dead_letter_list
from dlq.services.audit import audit_record

EXPORT_FIELDS = (
    "id", "task_id", "task_name", "queue", "status", "reason", "exception_type", "exception_message",
    "args", "kwargs", "retries", "requeue_count", "first_failed_at", "last_failed_at", "fingerprint", "version",
)
FORMATS = ("csv", "json")


def export_record(row: DeadLetter) -> dict[str, Any]:
    record = {f: getattr(row, f) for f in EXPORT_FIELDS}
    masked = masked_dead_letter(row)
    record["args"], record["kwargs"] = masked.args, masked.kwargs
    record["exception_message"] = masked.exception_message
    for key in ("first_failed_at", "last_failed_at"):
        record[key] = record[key].isoformat() if record[key] else None
    return record


def export_dead_letters(*, actor: str, filters: dict[str, Any] | None, fmt: str) -> Iterator[str]:
    """The dead letters matching ``filters``, newest first, streamed; the export is audited
    (who, which filters, which format) before the first row goes out."""
    queryset = dead_letter_list(filters=filters)
    export_audited(actor=actor, fmt=fmt, selection={"filters": {k: str(v) for k, v in (filters or {}).items()}})
    return export_stream(queryset, fmt)


def export_audited(*, actor: str, fmt: str, selection: dict[str, Any]) -> None:
    audit_record(actor=actor, action="export", object_type="dead_letters", object_id=fmt,
                 diff={"format": [None, fmt], **{k: [None, v] for k, v in selection.items()}})


#: A CSV cell starting with one of these is a formula to a spreadsheet (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    """A text cell made inert for spreadsheets: prefixed with ``'`` when it starts like a
    formula (OWASP's advice for CSV injection). Other values as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


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
        writer.writerow({k: neutralised(v) for k, v in record.items()})
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
