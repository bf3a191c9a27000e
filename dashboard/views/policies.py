"""Reprocess policies: every role reads them, admins create, change and delete them. The
rules are the service's (``reprocess_policy_validate``, inside ``reprocess_policy_save``)."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.forms import PolicyForm
from dashboard.views.common import Context, actor, allowed, base_context, error_response, requires
from dlq import selectors, services
from dlq.models import Role
from tasks.errors import ServiceError
from tasks.failures import DeathReason


def _policies_context(request: HttpRequest) -> Context:
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
            if pk is not None:
                selectors.reprocess_policy_get(id=pk)  # 404 for a policy that is gone
            policy = services.reprocess_policy_save(actor=actor(request), data=PolicyForm(request.POST).policy_data(),
                                                     policy_id=pk)
            messages.success(request, f"Policy for {policy.task_name} saved.")
    except ServiceError as exc:
        return error_response(request, exc, "dashboard/policies.html", _policies_context(request))
    return redirect("dashboard-policies")
