"""``manage.py dlq list|show|requeue|discard|resolve|export``: the DLQ for operators
without the web. Same services and selectors as the API; secrets masked."""
from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dlq import exports, selectors, services
from dlq.masking import mask_text, masked_dead_letter
from dlq.models import Role
from tasks.errors import ServiceError

FILTER_OPTIONS = ("status", "task_name", "exception_type", "reason", "queue", "fingerprint", "failed_after",
                  "failed_before", "q", "task_id")


class Command(BaseCommand):
    help = "Search, show, requeue, discard, resolve and export dead letters."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="newest first")
        for name in FILTER_OPTIONS:
            listing.add_argument(f"--{name.replace('_', '-')}", dest=name)
        listing.add_argument("--limit", type=int, default=50)
        show = sub.add_parser("show", help="one dead letter with its attempts and events")
        show.add_argument("id", type=int)
        for name in ("requeue", "discard", "resolve"):
            p = sub.add_parser(name)
            p.add_argument("ids", type=int, nargs="+")
            p.add_argument("--reason", required=name != "requeue", default="")
            p.add_argument("--actor", default=f"cli:{getpass.getuser()}")
            if name == "requeue":
                p.add_argument("--queue")
        export = sub.add_parser("export", help="CSV or JSON to stdout")
        export.add_argument("--format", choices=exports.FORMATS, default="csv")
        for name in FILTER_OPTIONS:
            export.add_argument(f"--{name.replace('_', '-')}", dest=name)

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"do_{action}")(**options)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc

    def _filters(self, options: dict[str, Any]) -> dict[str, Any]:
        return {k: options[k] for k in FILTER_OPTIONS if options.get(k)}

    def do_list(self, *, limit: int, **options: Any) -> None:
        for row in selectors.dead_letter_list(filters=self._filters(options))[: max(1, min(limit, 10_000))]:
            self.stdout.write(f"{row.pk}\t{row.status}\t{row.reason}\t{row.task_name}\t{row.last_failed_at:%Y-%m-%d %H:%M:%S}"
                              f"\t{row.exception_type}: {mask_text(row.exception_message)[:80]}")

    def do_show(self, *, id: int, **options: Any) -> None:
        row = selectors.dead_letter_get(id=id)
        data = {f: getattr(row, f) for f in ("id", "task_id", "task_name", "queue", "status", "reason", "exception_type",
                                             "retries", "requeue_count", "version", "fingerprint")}
        masked = masked_dead_letter(row)
        data.update(exception_message=masked.exception_message, args=masked.args, kwargs=masked.kwargs,
                    attempts=masked.attempts)
        data["events"] = [{"at": e.created_at.isoformat(), "actor": e.actor, "action": e.action, "reason": e.reason}
                          for e in selectors.dead_letter_events(dead_letter_id=row.pk)]
        self.stdout.write(json.dumps(data, indent=2, default=str))
        self.stdout.write(masked.traceback)

    def _each(self, ids: list[int], call: Callable[[int], object]) -> None:
        failed = 0
        for pk in ids:
            try:
                self.stdout.write(f"{pk}\t{call(pk)}")
            except ServiceError as exc:
                failed += 1
                self.stderr.write(f"{pk}\t{exc.code}: {exc.message}")
        if failed:
            raise CommandError(f"{failed} of {len(ids)} failed")

    def do_requeue(self, *, ids: list[int], reason: str, actor: str, queue: str | None, **options: Any) -> None:
        self._each(ids, lambda pk: services.dead_letter_requeue(dead_letter_id=pk, actor=actor, reason=reason, queue=queue,
                                                                   role=Role.ADMIN))  # shell access: admin

    def do_discard(self, *, ids: list[int], reason: str, actor: str, **options: Any) -> None:
        self._each(ids, lambda pk: services.dead_letter_discard(dead_letter_id=pk, actor=actor, reason=reason).status)

    def do_resolve(self, *, ids: list[int], reason: str, actor: str, **options: Any) -> None:
        self._each(ids, lambda pk: services.dead_letter_resolve(dead_letter_id=pk, actor=actor, reason=reason).status)

    def do_export(self, *, format: str, **options: Any) -> None:
        for chunk in exports.export_dead_letters(actor=options.get("actor") or "cli", filters=self._filters(options), fmt=format):
            sys.stdout.write(chunk)
