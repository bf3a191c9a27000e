"""The dead-letter list (search box and filters: ``dlq.filters``), a dead letter's page, and
its changes: edit (diff preview first), requeue, discard, resolve. Each change is one call
to ``dlq.services``; a refusal is the page again with the service's message and status."""
from __future__ import annotations

import difflib
import json
from functools import partial

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard.forms import EditForm
from dashboard.views.common import Context, actor, base_context, error_response, paged, requires, role_of
from dlq import selectors, services
from dlq.filters import DeadLetterFilterSet, filters_from_query
from dlq.masking import mask, masked_dead_letter
from dlq.models import DeadLetter, DeadLetterStatus, Role
from tasks.errors import ServiceError


@requires(Role.VIEWER)
@require_GET
def dead_letter_list(request: HttpRequest) -> HttpResponse:
    """The search form is the filter set's own form; a bad value is refused by the same
    filter set in the selector (400, "invalid filters")."""
    form = DeadLetterFilterSet(request.GET).form
    filters = filters_from_query(request.GET)
    context = base_context(request, form=form, rows=[], chips=[], filters=filters)
    try:
        context.update(paged(request, filters))
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/dead_letters.html", context)
    return render(request, "dashboard/dead_letters.html", context)


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _detail_context(request: HttpRequest, row: DeadLetter, **extra: object) -> Context:
    masked = masked_dead_letter(row)
    initial = {"args": _pretty(masked.args if masked.args is not None else []),
               "kwargs": _pretty(masked.kwargs if masked.kwargs is not None else {}),
               "queue": row.queue, "version": row.version}
    return base_context(
        request,
        row=row,
        masked=masked,
        args_pretty=_pretty(masked.args),
        kwargs_pretty=_pretty(masked.kwargs),
        headers_pretty=_pretty(masked.headers),
        options_pretty=_pretty(masked.options),
        events=list(selectors.dead_letter_events(dead_letter_id=row.pk)[:200]),
        edit_form=extra.pop("edit_form", None) or EditForm(initial=initial),
        is_dead=row.status == DeadLetterStatus.DEAD,
        can_resolve=row.status in (DeadLetterStatus.DEAD, DeadLetterStatus.REQUEUED),
        group_url=reverse("dashboard-group", args=[row.fingerprint]) if row.fingerprint else None,
        workflow=selectors.dead_letter_workflow(row),
        **extra,
    )


@requires(Role.VIEWER)
@require_GET
def dead_letter_detail(request: HttpRequest, pk: int) -> HttpResponse:
    row = selectors.dead_letter_get(id=pk)
    return render(request, "dashboard/detail.html", _detail_context(request, row))


@requires(Role.VIEWER)
@require_GET
def dead_letter_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The status badge, polled by the detail page while a requeued run is pending; when the
    status changes, htmx reloads the page (``HX-Refresh``) so buttons and events follow."""
    row = selectors.dead_letter_get(id=pk)
    response = render(request, "dashboard/_status.html", {"row": row})
    if request.GET.get("was") and request.GET["was"] != row.status:
        response["HX-Refresh"] = "true"
    return response


def _diff(before: object, after: object) -> list[tuple[str, str]]:
    """Line diff of two JSON values: (css class, line)."""
    lines = difflib.unified_diff(_pretty(before).splitlines(), _pretty(after).splitlines(), "before", "after",
                                 lineterm="", n=3)
    out = []
    for line in list(lines)[2:]:
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        out.append((kind, line))
    return out


@requires(Role.OPERATOR)
@require_POST
def dead_letter_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """``intent=preview`` shows the diff without saving; ``intent=save`` calls the service."""
    row = selectors.dead_letter_get(id=pk)
    form = EditForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Fix the highlighted fields; nothing was saved.")
        return render(request, "dashboard/detail.html", _detail_context(request, row, edit_form=form), status=400)
    data = form.cleaned_data
    queue = data["queue"].strip()
    moves = bool(queue) and queue != row.queue
    if request.POST.get("intent") != "save":
        diff = {"args": _diff(mask(row.args), data["args"]), "kwargs": _diff(mask(row.kwargs), data["kwargs"])}
        diff = {k: v for k, v in diff.items() if v}
        if moves:
            diff["queue"] = [("del", f"- {row.queue}"), ("add", f"+ {queue}")]
        return render(request, "dashboard/detail.html",
                      _detail_context(request, row, edit_form=form, preview=diff, preview_empty=not diff))
    update = partial(services.dead_letter_update, dead_letter_id=row.pk, actor=actor(request), role=role_of(request),
                     reason=data["reason"], version=data["version"], args=data["args"], kwargs=data["kwargs"])
    try:
        if moves:
            update(queue=queue)
        else:
            update()
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/detail.html",
                              _detail_context(request, selectors.dead_letter_get(id=pk), edit_form=form))
    messages.success(request, "Saved. The change is in the audit trail.")
    return redirect("dashboard-detail", pk=row.pk)


def _transition(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    row = selectors.dead_letter_get(id=pk)
    reason = request.POST.get("reason", "")
    try:
        if verb == "requeue":
            # The version the page showed: a click that lands after the row changed (a
            # requeued run already failed again) is refused instead of requeueing again.
            version = request.POST.get("version", "")
            task_id = services.dead_letter_requeue(dead_letter_id=row.pk, actor=actor(request), role=role_of(request),
                                                   reason=reason,
                                                   version=int(version) if version.isdigit() else None)
            messages.success(request, f"Requeued as task {task_id}. This page follows the new run.")
        elif verb == "discard":
            services.dead_letter_discard(dead_letter_id=row.pk, actor=actor(request), reason=reason)
            messages.success(request, "Discarded.")
        else:
            services.dead_letter_resolve(dead_letter_id=row.pk, actor=actor(request), reason=reason)
            messages.success(request, "Marked resolved.")
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/detail.html",
                              _detail_context(request, selectors.dead_letter_get(id=pk)))
    return redirect("dashboard-detail", pk=row.pk)


@requires(Role.OPERATOR)
@require_POST
def dead_letter_requeue(request: HttpRequest, pk: int) -> HttpResponse:
    return _transition(request, pk, "requeue")


@requires(Role.OPERATOR)
@require_POST
def dead_letter_discard(request: HttpRequest, pk: int) -> HttpResponse:
    return _transition(request, pk, "discard")


@requires(Role.OPERATOR)
@require_POST
def dead_letter_resolve(request: HttpRequest, pk: int) -> HttpResponse:
    return _transition(request, pk, "resolve")
