"""`./dev up` for real: web, worker, the outbox relay, beat and Flower start, answer, and all
stop on Ctrl-C."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from django.conf import settings

from taskplatform.embedded import free_port, port_is_free
from tests.workers import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch_database() -> str:
    db = settings.DATABASES["default"]
    name = f"up_smoke_{uuid.uuid4().hex[:8]}"
    dsn = dict(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db.get("PASSWORD") or None, dbname="postgres")
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{name}"
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_dev_up_serves_everything_and_stops_cleanly(scratch_database: str, tmp_path: Path) -> None:
    web, flower = free_port(), free_port()
    broker = re.sub(r"/\d+$", "/3", os.environ["CELERY_BROKER_URL"])
    env = {**os.environ, "DATABASE_URL": scratch_database, "CELERY_BROKER_URL": broker, "REDIS_URL": broker,
           "FLOWER_BASIC_AUTH": "demo:demo-password"}
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "taskplatform.launcher", "up", "--port", str(web),
                             "--flower-port", str(flower)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{web}"

        def answers(url: str) -> bool:
            try:
                return requests.get(url, timeout=2).status_code in (200, 401)
            except requests.RequestException:
                return False

        wait_for(lambda: answers(f"{base}/healthz"), timeout=120, message="web")
        wait_for(lambda: answers(f"http://127.0.0.1:{flower}/"), timeout=60, message="flower")
        output = (tmp_path / "up.log").read_text()
        assert f"http://localhost:{web}/admin/" in output and "demo / demo-password" in output

        assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        session = requests.Session()
        login = session.get(f"{base}/admin/login/", timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        response = session.post(f"{base}/admin/login/?next=/admin/", timeout=10, headers={"Referer": f"{base}/admin/login/"},
                                data={"csrfmiddlewaretoken": token, "username": "demo", "password": "demo-password"})
        assert response.url.endswith("/admin/") and "Dead letters" in response.text
        listing = session.get(f"{base}/admin/dlq/deadletter/", timeout=5)
        assert listing.status_code == 200 and "tasks.demo.divide" in listing.text  # the demo dead letters

        # A task enqueued from a view travels outbox → relay → worker and dies into a dead letter.
        demo = session.get(f"{base}/demo/", timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', demo.text).group(1)
        posted = session.post(f"{base}/demo/", timeout=10, headers={"Referer": f"{base}/demo/"},
                              data={"csrfmiddlewaretoken": token, "task": "tasks.demo.divide", "args": "[7, 0]",
                                    "kwargs": "{}"})
        assert posted.status_code == 200 and "Enqueued tasks.demo.divide" in posted.text

        def captured() -> bool:
            rows = session.get(f"{base}/api/v1/dead-letters/", params={"task_name": "tasks.demo.divide"}, timeout=5)
            return any(r["args"] == [7, 0] for r in rows.json()["results"])

        wait_for(captured, timeout=60, interval=0.5, message="the enqueued task's dead letter")

        assert requests.get(f"http://127.0.0.1:{flower}/", timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{flower}/", auth=("demo", "demo-password"), timeout=5).status_code == 200

        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5
        assert any("outbox_relay" in " ".join(c.cmdline()) for c in children)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        time.sleep(0.2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert port_is_free(web) and port_is_free(flower)
