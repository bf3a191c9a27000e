"""Bulk actions from the pages: a dry run first (the count, and a reason to give), then a
redrive job (admin only, as in the API)."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.forms import BulkForm
from dashboard.views.common import actor, base_context, error_response, requires
from dlq import services
from dlq.models import BulkAction, Role
from tasks.errors import ServiceError


@requires(Role.ADMIN)
@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    """Step ``preview`` (the default) shows the dry-run count and asks for a reason; step
    ``start`` creates the redrive job and goes to its page. The selection is the checked
    rows or every row matching the filters, which the service validates (``dlq.filters``)."""
    form = BulkForm(request.POST)
    context = base_context(request, form=form)
    if not form.is_valid():
        messages.error(request, "Choose an action and what to apply it to.")
        return render(request, "dashboard/bulk_confirm.html", context, status=400)
    selection = form.selection(request.POST)
    action = form.cleaned_data["action"]
    context.update(action=action, action_label=BulkAction(action).label, selection=selection,
                   filter_items=sorted((selection.filters or {}).items()),
                   ids_csv=",".join(str(i) for i in selection.ids or []),
                   back=request.POST.get("back") or reverse("dashboard-dead-letters"))
    if selection.ids is not None and not selection.ids:
        messages.error(request, "No rows are checked.")
        return render(request, "dashboard/bulk_confirm.html", context, status=400)
    try:
        if request.POST.get("step") != "start":
            context["preview"] = services.dead_letters_bulk_preview(action=action, ids=selection.ids,
                                                                    filters=selection.filters)
            return render(request, "dashboard/bulk_confirm.html", context)
        job = services.dead_letters_bulk_start(actor=actor(request), action=action,
                                               reason=form.cleaned_data["reason"],
                                               rate_limit=form.cleaned_data["rate_limit"],
                                               ids=selection.ids, filters=selection.filters)
    except ServiceError as exc:
        if request.POST.get("step") == "start":
            try:
                context["preview"] = services.dead_letters_bulk_preview(action=action, ids=selection.ids,
                                                                        filters=selection.filters)
            except ServiceError:
                pass
        return error_response(request, exc, "dashboard/bulk_confirm.html", context)
    messages.success(request, f"Job #{job.pk} started: {job.action} {job.total} dead letter(s).")
    return redirect("dashboard-job", pk=job.pk)
