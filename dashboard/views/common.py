"""What every ops page shares: the role check, the base context, the error page, query
strings and cursor pages of dead letters."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from urllib.parse import urlencode
from weakref import WeakKeyDictionary

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dlq import selectors
from dlq.models import BulkAction, Role, user_role
from dlq.roles import role_at_least
from tasks.errors import NotFound, ServiceError

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50

View = Callable[..., HttpResponse]
Context = dict[str, object]

# The user's role, looked up once per request (a groups query), forgotten with the request.
_roles: WeakKeyDictionary[HttpRequest, str | None] = WeakKeyDictionary()


def role_of(request: HttpRequest) -> str | None:
    if request not in _roles:
        _roles[request] = user_role(request.user)
    return _roles[request]


def allowed(request: HttpRequest, role: str) -> bool:
    return role_at_least(role_of(request), role)


def requires(role: str) -> Callable[[View], View]:
    """Log in first; then the role, or a 403 page that says which role is needed. A
    ``NotFound`` from a selector or service is the 404 page."""
    def decorator(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if not allowed(request, role):
                messages.error(request, f"This needs the {role} role; yours is {role_of(request) or 'none'}.")
                return render(request, "dashboard/forbidden.html", base_context(request), status=403)
            try:
                return view(request, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.message) from exc
        return wrapped
    return decorator


def base_context(request: HttpRequest, **extra: object) -> Context:
    """What ``dashboard/base.html`` needs: the role, which buttons to show, the links."""
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


def error_response(request: HttpRequest, exc: ServiceError, template: str, context: Mapping[str, object]) -> HttpResponse:
    """The page again, with the service's message and its HTTP status (400, 404, 409, 503)."""
    messages.error(request, exc.message)
    return render(request, template, context, status=exc.status)


def query_string(params: Mapping[str, object], **changes: object) -> str:
    """``?a=1&b=2`` from ``params`` with ``changes`` applied; empty values are dropped."""
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else "?"


def page_size(request: HttpRequest) -> int:
    try:
        size = int(request.GET.get("page_size", DEFAULT_PAGE_SIZE))
    except ValueError:
        size = DEFAULT_PAGE_SIZE
    return size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE


def paged(request: HttpRequest, filters: Mapping[str, str]) -> Context:
    """One cursor page of the filtered dead letters, with neighbour links and filter chips.
    Raises ``ValidationFailed`` for a bad filter or cursor."""
    qs = selectors.dead_letter_list(filters=filters)
    rows, next_cursor, prev_cursor = selectors.dead_letter_page(qs, cursor=request.GET.get("cursor") or None,
                                                                size=page_size(request))
    params = {**filters, "page_size": request.GET.get("page_size", "")}
    chips = [{"key": key, "value": value, "remove": query_string({k: v for k, v in params.items() if k != key})}
             for key, value in filters.items()]
    return {
        "rows": rows,
        "next_url": query_string(params, cursor=next_cursor) if next_cursor else None,
        "prev_url": query_string(params, cursor=prev_cursor) if prev_cursor else None,
        "chips": chips,
        "filters": filters,
        "page_size": page_size(request),
        "page_sizes": PAGE_SIZES,
    }
