"""Ops pages (server-rendered). Reads go through ``dlq.selectors``, writes through
``dlq.services``, broker status through ``dashboard.ops``; a view only parses input, calls,
and renders. A ``ServiceError`` becomes a Django message on the re-rendered page, with the
error's HTTP status (400, 404, 409, 503).

Roles (``dashboard.permissions.has_role``): every page needs ``viewer``; edit, requeue,
discard and resolve need ``operator``; bulk actions, cancelling jobs and schedules need
``admin``, as in the API. Buttons a role may not use are not rendered at all.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from dashboard import ops
from dashboard.forms import BulkForm, EditForm, SearchForm
from dlq import selectors, services
from dlq.errors import NotFound, ServiceError, ValidationFailed
from dlq.masking import mask, masked_dead_letter
from dlq.models import BulkAction, DeadLetter, DeadLetterStatus, Role, user_role
from dlq.roles import role_at_least
from tasks.outbox import outbox_stats

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
TERMINAL_JOB = ("finished", "cancelled", "failed")
View = Callable[..., HttpResponse]


# --- Roles ---------------------------------------------------------------------------------

def role_of(request: HttpRequest) -> str | None:
    """The user's role, looked up once per request."""
    if not hasattr(request, "_dashboard_role"):
        request._dashboard_role = user_role(request.user)  # type: ignore[attr-defined]
    return request._dashboard_role  # type: ignore[attr-defined,no-any-return]


def allowed(request: HttpRequest, role: str) -> bool:
    return role_at_least(role_of(request), role)


def requires(role: str) -> Callable[[View], View]:
    """Log in first; then the role, or a 403 page that says which role is needed."""
    def decorator(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not allowed(request, role):
                messages.error(request, f"This needs the {role} role; yours is {role_of(request) or 'none'}.")
                return render(request, "dashboard/forbidden.html", base_context(request), status=403)
            try:
                return view(request, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.message) from exc
        return wrapped
    return decorator


def base_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {
        "role": role_of(request),
        "can_operate": allowed(request, Role.OPERATOR),
        "can_admin": allowed(request, Role.ADMIN),
        "flower_url": settings.FLOWER_URL,
        "bulk_actions": BulkAction.choices,
        **extra,
    }


def actor(request: HttpRequest) -> str:
    return str(request.user.get_username())


def error_response(request: HttpRequest, exc: ServiceError, template: str, context: dict[str, Any]) -> HttpResponse:
    messages.error(request, exc.message)
    return render(request, template, context, status=exc.status)


# --- Overview ------------------------------------------------------------------------------

@requires(Role.VIEWER)
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    stats = selectors.dead_letter_overview(hours=48)
    chart = {"labels": [p["hour"].strftime("%d %H:00") for p in stats["per_hour"]],
             "counts": [p["count"] for p in stats["per_hour"]]}
    return render(request, "dashboard/overview.html", base_context(
        request,
        stats=stats,
        statuses=[(s.value, s.label, stats["by_status"].get(s.value, 0)) for s in DeadLetterStatus],
        chart=chart,
        chart_max=max(chart["counts"] or [0]),
        groups=selectors.failure_groups(filters={"status": DeadLetterStatus.DEAD}, limit=8),
        jobs=list(selectors.redrive_job_active()[:10]),
        alerts=list(selectors.alert_list(open_only=True)[:10]),
        outbox=outbox_stats(),
        outbox_alert_age=settings.OUTBOX_ALERT_AGE_SECONDS,
    ))


@requires(Role.VIEWER)
@require_GET
def broker_panel(request: HttpRequest) -> HttpResponse:
    """Workers and queue depths (loaded by the overview after it renders; ≤ 1 s)."""
    return render(request, "dashboard/_broker.html", {"broker": ops.broker_status(timeout=0.8),
                                                      "flower_url": settings.FLOWER_URL})


# --- Audit trail ---------------------------------------------------------------------------

@requires(Role.VIEWER)
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    filters = {key: request.GET[key] for key in selectors.AUDIT_FILTERS if request.GET.get(key)}
    try:
        events, next_cursor = selectors.audit_events(filters=filters, cursor=request.GET.get("cursor") or None, size=50)
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/audit.html", base_context(request, events=[], filters=filters))
    return render(request, "dashboard/audit.html", base_context(
        request, events=events, filters=filters, next_url=_query(filters, cursor=next_cursor) if next_cursor else None))


# --- Dead letters --------------------------------------------------------------------------

def _page_size(request: HttpRequest) -> int:
    try:
        size = int(request.GET.get("page_size", DEFAULT_PAGE_SIZE))
    except ValueError:
        size = DEFAULT_PAGE_SIZE
    return size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE


def _query(params: dict[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else "?"


def _paged(request: HttpRequest, filters: dict[str, str]) -> dict[str, Any]:
    """One cursor page of the filtered list, with neighbour links and filter chips."""
    qs = selectors.dead_letter_list(filters=filters)
    rows, next_cursor, prev_cursor = selectors.dead_letter_page(qs, cursor=request.GET.get("cursor") or None,
                                                                size=_page_size(request))
    params = {**filters, "page_size": request.GET.get("page_size", "")}
    chips = [{"key": key, "value": value, "remove": _query({k: v for k, v in params.items() if k != key})}
             for key, value in filters.items()]
    return {
        "rows": rows,
        "next_url": _query(params, cursor=next_cursor) if next_cursor else None,
        "prev_url": _query(params, cursor=prev_cursor) if prev_cursor else None,
        "chips": chips,
        "filters": filters,
        "page_size": _page_size(request),
        "page_sizes": PAGE_SIZES,
    }


@requires(Role.VIEWER)
@require_GET
def dead_letter_list(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET)
    filters = form.filters()
    context = base_context(request, form=form, rows=[], chips=[], filters=filters)
    try:
        context.update(_paged(request, filters))
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/dead_letters.html", context)
    return render(request, "dashboard/dead_letters.html", context)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _detail_context(request: HttpRequest, row: DeadLetter, **extra: Any) -> dict[str, Any]:
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


def _diff(before: Any, after: Any) -> list[tuple[str, str]]:
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
    changes: dict[str, Any] = {"args": data["args"], "kwargs": data["kwargs"]}
    if queue and queue != row.queue:
        changes["queue"] = queue
    if request.POST.get("intent") != "save":
        diff = {"args": _diff(mask(row.args), data["args"]), "kwargs": _diff(mask(row.kwargs), data["kwargs"])}
        diff = {k: v for k, v in diff.items() if v}
        if "queue" in changes:
            diff["queue"] = [("del", f"- {row.queue}"), ("add", f"+ {queue}")]
        return render(request, "dashboard/detail.html",
                      _detail_context(request, row, edit_form=form, preview=diff, preview_empty=not diff))
    try:
        services.dead_letter_update(dead_letter_id=row.pk, actor=actor(request), role=role_of(request),
                                    reason=data["reason"],
                                    version=data["version"], **changes)
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


# --- Bulk actions: dry run first, then a redrive job ---------------------------------------

@requires(Role.ADMIN)
@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    """Step ``preview`` (the default) shows the dry-run count and asks for a reason; step
    ``start`` creates the redrive job and goes to its page."""
    form = BulkForm(request.POST)
    context = base_context(request, form=form)
    if not form.is_valid():
        messages.error(request, "Choose an action and what to apply it to.")
        return render(request, "dashboard/bulk_confirm.html", context, status=400)
    selection = form.selection(request.POST)
    action = form.cleaned_data["action"]
    context.update(action=action, action_label=BulkAction(action).label, selection=selection,
                   filter_items=sorted((selection.get("filters") or {}).items()),
                   ids_csv=",".join(str(i) for i in selection.get("ids") or []),
                   back=request.POST.get("back") or reverse("dashboard-dead-letters"))
    if "ids" in selection and not selection["ids"]:
        messages.error(request, "No rows are checked.")
        return render(request, "dashboard/bulk_confirm.html", context, status=400)
    try:
        if request.POST.get("step") != "start":
            context["preview"] = services.dead_letters_bulk_preview(action=action, **selection)
            return render(request, "dashboard/bulk_confirm.html", context)
        job = services.dead_letters_bulk_start(actor=actor(request), action=action,
                                               reason=form.cleaned_data["reason"],
                                               rate_limit=form.cleaned_data["rate_limit"], **selection)
    except ServiceError as exc:
        if request.POST.get("step") == "start":
            try:
                context["preview"] = services.dead_letters_bulk_preview(action=action, **selection)
            except ServiceError:
                pass
        return error_response(request, exc, "dashboard/bulk_confirm.html", context)
    messages.success(request, f"Job #{job.pk} started: {job.action} {job.total} dead letter(s).")
    return redirect("dashboard-job", pk=job.pk)


# --- Groups --------------------------------------------------------------------------------

@requires(Role.VIEWER)
@require_GET
def group_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", DeadLetterStatus.DEAD)
    filters = {"status": status} if status else {}
    try:
        groups = selectors.failure_groups(filters=filters, limit=200)
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/groups.html", base_context(request, groups=[], status=status))
    return render(request, "dashboard/groups.html", base_context(
        request, groups=groups, status=status, statuses=DeadLetterStatus.choices))


@requires(Role.VIEWER)
@require_GET
def group_detail(request: HttpRequest, fingerprint: str) -> HttpResponse:
    summary = selectors.failure_groups(filters={"fingerprint": fingerprint}, limit=1)
    if not summary:
        raise Http404("no dead letter has this fingerprint")
    filters = {"fingerprint": fingerprint}
    if request.GET.get("status"):
        filters["status"] = request.GET["status"]
    context = base_context(request, group=summary[0], fingerprint=fingerprint, statuses=DeadLetterStatus.choices,
                           status=request.GET.get("status", ""))
    try:
        context.update(_paged(request, filters))
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/group.html", context)
    return render(request, "dashboard/group.html", context)


# --- Redrive jobs --------------------------------------------------------------------------

def _job_context(job: Any) -> dict[str, Any]:
    processed = job.done + job.failed
    percent = 100 if job.status == "finished" else (int(processed * 100 / job.total) if job.total else 0)
    elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds() if job.started_at else 0
    return {"job": job, "percent": min(percent, 100), "processed": processed,
            "rate": round(processed / elapsed, 1) if elapsed > 0 else None,
            "running": job.status not in TERMINAL_JOB}


@requires(Role.VIEWER)
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = [_job_context(job) for job in selectors.redrive_job_list()[:100]]
    return render(request, "dashboard/jobs.html", base_context(request, jobs=jobs))


@requires(Role.VIEWER)
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.redrive_job_get(id=pk)
    return render(request, "dashboard/job.html", base_context(request, **_job_context(job)))


@requires(Role.VIEWER)
@require_GET
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The progress fragment htmx polls every second until the job is over."""
    job = selectors.redrive_job_get(id=pk)
    return render(request, "dashboard/_job_progress.html", base_context(request, **_job_context(job)))


@requires(Role.ADMIN)
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = selectors.redrive_job_get(id=pk)
    try:
        services.redrive_job_cancel(job_id=job.pk, actor=actor(request))
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/job.html",
                              base_context(request, **_job_context(selectors.redrive_job_get(id=pk))))
    messages.success(request, f"Job #{job.pk} cancelled; rows already processed stay processed.")
    return redirect("dashboard-job", pk=job.pk)


# --- Schedules (django-celery-beat) --------------------------------------------------------

def _next_run(task: Any, now: Any) -> Any:
    """When beat will next send ``task`` (an estimate; ``None`` when unknown or disabled)."""
    if not task.enabled:
        return None
    try:
        remaining = task.schedule.remaining_estimate(task.last_run_at or task.date_changed or now)
    except Exception:  # a clocked/solar schedule without an estimate, a bad crontab
        return None
    return now + max(remaining, timedelta(0))


def _schedules_context(request: HttpRequest) -> dict[str, Any]:
    now = timezone.now()
    rows = [{"task": t, "next_run": _next_run(t, now)} for t in selectors.periodic_task_list()]
    return base_context(request, schedules=rows)


@requires(Role.VIEWER)
@require_GET
def schedule_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/schedules.html", _schedules_context(request))


@requires(Role.ADMIN)
@require_POST
def schedule_action(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    try:
        if verb == "run":
            task_id = services.periodic_task_run_now(periodic_task_id=pk, actor=actor(request))
            messages.success(request, f"Sent once now as task {task_id}.")
        elif verb in ("enable", "disable"):
            task = services.periodic_task_set_enabled(periodic_task_id=pk, enabled=verb == "enable", actor=actor(request))
            messages.success(request, f"{task.name}: {'enabled' if task.enabled else 'disabled'}.")
        else:
            raise Http404("unknown schedule action")
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/schedules.html", _schedules_context(request))
    return redirect("dashboard-schedules")


# --- Reprocess policies ---------------------------------------------------------------------

def _policy_data(post: Any, instance: Any = None) -> dict[str, Any]:
    """The policy form's fields, validated by the API's serializer (one set of rules)."""
    from dashboard.api.serializers import ReprocessPolicySerializer

    def listed(name: str) -> list[str]:
        return [item.strip() for item in post.get(name, "").split(",") if item.strip()]

    raw = {
        "task_name": post.get("task_name", "").strip(),
        "reasons": listed("reasons"), "exception_types": listed("exception_types"),
        "cooldown_seconds": post.get("cooldown_seconds"), "backoff_factor": post.get("backoff_factor"),
        "max_auto_requeues": post.get("max_auto_requeues"),
        "circuit_max_failures_per_minute": post.get("circuit_max_failures_per_minute"),
        "enabled": post.get("enabled") == "on",
    }
    serializer = ReprocessPolicySerializer(instance, data=raw)
    if not serializer.is_valid():
        errors = "; ".join(f"{field}: {' '.join(str(m) for m in msgs)}" for field, msgs in serializer.errors.items())
        raise ValidationFailed(f"invalid policy: {errors}", fields=serializer.errors)
    return dict(serializer.validated_data)


def _policies_context(request: HttpRequest) -> dict[str, Any]:
    from dlq.models import DeathReason

    return base_context(request, policies=list(selectors.reprocess_policy_list()), reasons=DeathReason.values,
                        can_admin=allowed(request, Role.ADMIN))


@requires(Role.VIEWER)
@require_GET
def policy_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/policies.html", _policies_context(request))


@requires(Role.ADMIN)
@require_POST
def policy_save(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    try:
        if request.POST.get("delete") == "yes" and pk is not None:
            services.reprocess_policy_delete(actor=actor(request), policy_id=pk)
            messages.success(request, "Policy deleted.")
        else:
            current = selectors.reprocess_policy_get(id=pk) if pk is not None else None
            policy = services.reprocess_policy_save(actor=actor(request), data=_policy_data(request.POST, current),
                                                     policy_id=pk)
            messages.success(request, f"Policy for {policy.task_name} saved.")
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/policies.html", _policies_context(request))
    return redirect("dashboard-policies")
