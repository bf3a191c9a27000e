"""The /demo/ page (development only): a form that enqueues demo tasks, as the API does."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dlq import services
from dlq.jsonsafe import parse_json
from dlq.models import Role, user_role
from tasks.backpressure import QueueFull
from tasks.errors import ServiceError
from tasks.registry import describe_signature, enqueueable_tasks


@login_required
@require_http_methods(["GET", "POST"])
def demo(request: HttpRequest) -> HttpResponse:
    can_enqueue = user_role(request.user) in (Role.OPERATOR, Role.ADMIN)
    form = {"task": "tasks.demo.divide", "args": "[1, 0]", "kwargs": "{}"}
    if request.method == "POST":
        form = {key: request.POST.get(key, "") for key in form}
        if not can_enqueue:
            messages.error(request, "Your role cannot enqueue tasks (operator or admin needed).")
            return render(request, "demo/demo.html", _context(form, can_enqueue), status=403)
        try:
            args = parse_json(form["args"] or "[]", name="args")
            kwargs = parse_json(form["kwargs"] or "{}", name="kwargs")
            task_id = services.task_enqueue(actor=request.user.get_username(), role=user_role(request.user),
                                            task_name=form["task"], args=args, kwargs=kwargs).task_id
        except QueueFull as exc:
            messages.error(request, f"The system is busy ({exc.depth} tasks are waiting); "
                                    f"please try again in {exc.retry_after} seconds.")
            response = render(request, "demo/demo.html", _context(form, can_enqueue), status=429)
            response["Retry-After"] = str(exc.retry_after)
            return response
        except ServiceError as exc:
            messages.error(request, exc.message)
            return render(request, "demo/demo.html", _context(form, can_enqueue), status=400)
        messages.success(request, f"Enqueued {form['task']} as {task_id}.")
        return redirect("demo")
    return render(request, "demo/demo.html", _context(form, can_enqueue))


def _context(form: dict[str, str], can_enqueue: bool) -> dict[str, object]:
    return {
        "form": form,
        "can_enqueue": can_enqueue,
        "tasks": [{"name": name, "signature": describe_signature(t)} for name, t in enqueueable_tasks().items()],
    }
