"""The ops dashboard in a real browser (headless chromium), against the live server and a
real worker: fix and requeue a dead letter, role-aware buttons, bulk dry runs, live job
progress, the 390 px layout; and (with ``DASHBOARD_SCREENSHOTS=1``) the screenshots in
docs/screenshots/."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from dlq.models import DeadLetter, DeadLetterEvent, DeadLetterStatus, RedriveJob, Role
from tests.browser.conftest import log_in
from tests.conftest import make_user
from tests.factories import DeadLetterFactory
from tests.workers import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent.parent
WRITE_BUTTONS = re.compile(r"requeue|discard|resolve|save changes|preview diff|cancel job|run now|disable|enable|bulk",
                           re.IGNORECASE)


def capture_division_by_zero(x: int) -> DeadLetter:
    """A real dead letter: tasks.demo.divide(x, 0) fails in the worker and is captured."""
    from tasks.enqueue import enqueue

    task_id = enqueue("tasks.demo.divide", args=[x, 0])
    return wait_for(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=30, message="dead letter")


def test_operator_searches_fixes_args_with_a_reason_requeues_and_sees_it_resolved(
        live_server: Any, live_worker: Any, page: Any) -> None:
    row = capture_division_by_zero(6)
    DeadLetterFactory.create_batch(3, exception_message="card declined")  # noise the search must skip
    make_user("olive", Role.OPERATOR)
    log_in(page, live_server.url, "olive", "pw-olive")

    page.get_by_role("link", name="Dead letters", exact=True).click()
    page.get_by_label("Search").fill("division")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url(re.compile(r".*[?&]q=division.*"))
    page.wait_for_load_state()
    links = page.locator("table tbody a")
    assert links.count() == 1 and "Remove filter q" in page.content()
    links.first.click()
    page.wait_for_url(f"{live_server.url}/dashboard/dead-letters/{row.pk}/")
    assert "ZeroDivisionError" in page.locator("#err-h + p").inner_text()
    assert "division by zero" in page.locator("pre").first.inner_text()  # the traceback

    args = page.get_by_label("Args (JSON array)")
    args.fill("[6, ")  # the editor refuses invalid JSON before anything is sent
    assert "invalid JSON" in page.locator("#id_args-status").inner_text()
    assert page.get_by_role("button", name="Save changes").is_disabled()
    args.fill("[6, 3]")
    assert page.locator("#id_args-status").inner_text() == "valid JSON"
    page.get_by_label("Reason for the change (required)").fill("the divisor was lost upstream")
    page.get_by_role("button", name="Preview diff").click()
    diff = page.locator("#diff-preview")
    assert re.search(r"-\s+0", diff.inner_text()) and re.search(r"\+\s+3", diff.inner_text())
    row.refresh_from_db()
    assert row.args == [6, 0]  # the preview saved nothing
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Saved. The change is in the audit trail.").wait_for()
    row.refresh_from_db()
    assert row.args == [6, 3]

    page.get_by_role("button", name="Requeue", exact=True).click()
    page.get_by_text("Requeued as task").wait_for()
    # The status badge polls while the requeued run is pending, then the page reloads.
    page.locator("#status", has_text="resolved").wait_for(timeout=30_000)
    assert "the divisor was lost upstream" in page.locator("table").last.inner_text()
    row.refresh_from_db()
    assert row.status == DeadLetterStatus.RESOLVED
    assert list(DeadLetterEvent.objects.filter(dead_letter=row).order_by("id").values_list("action", "actor")) == [
        ("edit", "olive"), ("requeue", "olive"), ("resolve", "system")]


def test_a_viewer_sees_no_write_buttons(live_server: Any, live_worker: Any, page: Any) -> None:
    row = DeadLetterFactory()
    job = RedriveJob.objects.create(action="requeue", actor="x", reason="r", total=3, status="running")
    make_user("vic", Role.VIEWER)
    log_in(page, live_server.url, "vic", "pw-vic")
    for path in ("/dashboard/", "/dashboard/dead-letters/", f"/dashboard/dead-letters/{row.pk}/",
                 f"/dashboard/groups/{row.fingerprint}/", f"/dashboard/jobs/{job.pk}/", "/dashboard/schedules/"):
        page.goto(live_server.url + path)
        labels = [b.inner_text().strip() for b in page.locator("main button").all()]
        assert not [t for t in labels if WRITE_BUTTONS.search(t)], (path, labels)
        assert page.locator("input[name=ids]").count() == 0 and page.locator("textarea").count() == 0
    assert page.get_by_role("button", name="Log out").is_visible()


def test_a_bulk_discard_shows_its_dry_run_count_before_it_runs(live_server: Any, live_worker: Any, page: Any) -> None:
    rows = DeadLetterFactory.create_batch(4, exception_message="stale webhook retry")
    DeadLetterFactory.create_batch(2, exception_message="unrelated failure")
    make_user("adele", Role.ADMIN)
    log_in(page, live_server.url, "adele", "pw-adele")
    page.goto(f"{live_server.url}/dashboard/dead-letters/?q=webhook")
    for row in rows[:3]:
        page.get_by_label(f"Select dead letter {row.pk}").check()
    page.get_by_label("Bulk action").select_option("discard")
    page.get_by_role("button", name="Preview (dry run)…").click()
    assert page.locator("#dry-run-count").inner_text() == "3"
    assert DeadLetter.objects.filter(status=DeadLetterStatus.DEAD).count() == 6  # nothing ran yet
    assert not RedriveJob.objects.exists()
    page.get_by_label("Reason (required, copied to every row's audit trail)").fill("webhook replays are obsolete")
    page.get_by_role("button", name="Discard 3 dead letter(s)").click()
    page.locator("#job-status", has_text="finished").wait_for(timeout=30_000)
    assert page.locator("#job-percent").inner_text() == "100 %"
    assert {r.pk for r in DeadLetter.objects.filter(status=DeadLetterStatus.DISCARDED)} == {r.pk for r in rows[:3]}


def test_a_redrive_jobs_progress_bar_moves_to_100(live_server: Any, live_worker: Any, page: Any) -> None:
    DeadLetterFactory.create_batch(40, task_name="tasks.demo.add", args=[1, 2], exception_message="transient blip")
    make_user("adam", Role.ADMIN)
    log_in(page, live_server.url, "adam", "pw-adam")
    page.goto(f"{live_server.url}/dashboard/dead-letters/?q=blip")
    page.get_by_label("Bulk action").select_option("requeue")
    page.get_by_label("Apply to").select_option("filter")
    page.get_by_role("button", name="Preview (dry run)…").click()
    assert page.locator("#dry-run-count").inner_text() == "40"
    page.get_by_label("Reason (required, copied to every row's audit trail)").fill("blip is over")
    page.get_by_label("Rate limit, messages per second (optional)").fill("10")
    page.get_by_role("button", name="Requeue 40 dead letter(s)").click()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        bar = page.locator("#job-progress .progress")
        value = int(bar.get_attribute("aria-valuenow") or 0)
        if not seen or seen[-1] != value:
            seen.append(value)
        if value == 100 and page.locator("#job-status").inner_text() == "finished":
            break
        page.wait_for_timeout(200)
    assert seen[-1] == 100, seen
    assert any(0 < v < 100 for v in seen), seen  # it moved, it did not just jump
    assert seen == sorted(seen)
    assert page.locator("#job-progress .progress > div").evaluate("e => e.style.width") == "100%"
    wait_for(lambda: DeadLetter.objects.filter(status=DeadLetterStatus.RESOLVED).count() == 40, timeout=60,
             message="every requeued run resolved its row")


@pytest.mark.parametrize("width", [390, 1280])
def test_pages_fit_the_screen(live_server: Any, live_worker: Any, browser: Any, width: int) -> None:
    row = DeadLetterFactory(exception_message="a very long message " * 20,
                            traceback='  File "/a/very/long/path/' + "x" * 300 + '.py", line 1\nValueError: boom',
                            args=[{"nested": {"deep": list(range(30))}}], task_id="t" * 200)
    make_user("wendy", Role.ADMIN)
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    try:
        log_in(page, live_server.url, "wendy", "pw-wendy")
        for path in ("/dashboard/", "/dashboard/dead-letters/", f"/dashboard/dead-letters/{row.pk}/",
                     f"/dashboard/groups/{row.fingerprint}/", "/dashboard/jobs/", "/dashboard/schedules/"):
            page.goto(live_server.url + path)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, (path, width, overflow)
    finally:
        context.close()


def test_screenshots(live_server: Any, live_worker: Any, browser: Any, tmp_path: Path) -> None:
    """Realistic data, then the overview, a dead letter and its group at 1280 and 390 px.
    Written to docs/screenshots/ when DASHBOARD_SCREENSHOTS=1, else to a temporary folder."""
    from datetime import timedelta

    from django.utils import timezone

    from dlq.models import Alert

    now = timezone.now()
    for hour in range(0, 48, 3):
        DeadLetterFactory.create_batch(1 + hour % 5, task_name="billing.charge_invoice", exception_type="CardError",
                                       exception_message="card declined for invoice 1042", reason="non_retryable",
                                       last_failed_at=now - timedelta(hours=hour))
    DeadLetterFactory.create_batch(6, task_name="tasks.demo.divide", args=[1, 0], exception_type="ZeroDivisionError",
                                   exception_message="division by zero", reason="non_retryable")
    DeadLetterFactory.create_batch(3, task_name="emails.send_receipt", exception_type="TimeoutError",
                                   exception_message="SMTP server timed out after 30s", reason="max_retries_exceeded")
    for n, row in enumerate(DeadLetter.objects.all()):  # spread over 48 h for the chart
        at = now - timedelta(hours=(n * 7) % 48, minutes=n)
        DeadLetter.objects.filter(pk=row.pk).update(created_at=at, last_failed_at=at,
                                                    first_failed_at=at - timedelta(minutes=3))
    DeadLetter.objects.filter(task_name="tasks.demo.divide").update(
        traceback='Traceback (most recent call last):\n  File "/app/tasks/base.py", line 88, in __call__\n'
                  '    return super().__call__(*args, **kwargs)\n  File "/app/tasks/demo.py", line 21, in divide\n'
                  '    return x / y\n           ~~^~~\nZeroDivisionError: division by zero',
        attempts=[{"number": 1, "at": (now - timedelta(minutes=3)).isoformat(), "exception_type": "ZeroDivisionError",
                   "message": "division by zero", "worker": "celery@worker-1"}])
    RedriveJob.objects.create(action="requeue", actor="demo", reason="provider back", total=120, done=48,
                              status="running", started_at=now - timedelta(seconds=30))
    Alert.objects.create(kind="dlq_size", key="dlq_size", message="The DLQ holds 64 dead letters (threshold 50)")
    row = DeadLetter.objects.filter(task_name="tasks.demo.divide").first()
    assert row is not None
    from dlq import services

    services.dead_letter_update(dead_letter_id=row.pk, actor="demo", reason="the divisor was lost upstream",
                                version=row.version, args=[1, 4])
    make_user("shot", Role.ADMIN)
    out = ROOT / "docs" / "screenshots" if os.environ.get("DASHBOARD_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    pages = {"overview": "/dashboard/", "detail": f"/dashboard/dead-letters/{row.pk}/",
             "group": f"/dashboard/groups/{row.fingerprint}/"}
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        try:
            log_in(page, live_server.url, "shot", "pw-shot")
            for name, path in pages.items():
                page.goto(live_server.url + path)
                if name == "overview":
                    page.locator("#broker table, #broker [role=alert]").first.wait_for()
                target = out / f"{name}-{width}.png"
                page.screenshot(path=str(target), full_page=True)
                assert target.stat().st_size > 10_000
        finally:
            context.close()
