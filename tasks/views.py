"""The /demo/ page: a form that enqueues demo tasks through ``enqueue()``."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dlq.errors import ServiceError
from dlq.jsonsafe import parse_json
from dlq.models import Role, user_role
from tasks.backpressure import QueueFull
from tasks.enqueue import enqueue
from tasks.registry import bind_arguments, describe_signature, enqueueable_tasks, get_enqueueable_task


@login_required
@require_http_methods(["GET", "POST"])
def demo(request: HttpRequest) -> HttpResponse:
    can_enqueue = user_role(request.user) in (Role.OPERATOR, Role.ADMIN)
    form = {"task": "tasks.demo.divide", "args": "[1, 0]", "kwargs": "{}"}
    if request.method == "POST":
        form = {key: request.POST.get(key, "") for key in form}
        if not can_enqueue:
            messages.error(request, "Your role cannot enqueue tasks (operator or admin needed).")
            return render(request, "tasks/demo.html", _context(form, can_enqueue), status=403)
        try:
            task = get_enqueueable_task(form["task"])
            args = parse_json(form["args"] or "[]", name="args")
            kwargs = parse_json(form["kwargs"] or "{}", name="kwargs")
            bind_arguments(task, args, kwargs)
            task_id = enqueue(task, args=args, kwargs=kwargs)
        except QueueFull as exc:
            messages.error(request, f"The system is busy ({exc.depth} tasks are waiting); "
                                    f"please try again in {exc.retry_after} seconds.")
            response = render(request, "tasks/demo.html", _context(form, can_enqueue), status=429)
            response["Retry-After"] = str(exc.retry_after)
            return response
        except ServiceError as exc:
            messages.error(request, exc.message)
            return render(request, "tasks/demo.html", _context(form, can_enqueue), status=400)
        messages.success(request, f"Enqueued {task.name} as {task_id}.")
        return redirect("demo")
    return render(request, "tasks/demo.html", _context(form, can_enqueue))


def _context(form: dict[str, str], can_enqueue: bool) -> dict[str, object]:
    return {
        "form": form,
        "can_enqueue": can_enqueue,
        "tasks": [{"name": name, "signature": describe_signature(t)} for name, t in enqueueable_tasks().items()],
    }
