"""`./dev up` for real: web, worker, the outbox relay, beat and Flower start, answer, print
every line under their name, the worker restarts when a Python file changes, and all stop on
Ctrl-C. Then the launcher's pieces on their own, fast: honcho's prefixes and "one process
dies, all stop", and the supervisor that restarts a process group on a code change."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from celery import Celery
from django.conf import settings

from devtools.embedded import free_port, port_is_free
from devtools.launcher import build_parser, watched_dirs
from tests.workers import wait_for

ROOT = Path(__file__).resolve().parents[2]
# A line of honcho's output: "12:03:07 worker | ...".
PREFIXED = re.compile(r"^\d\d:\d\d:\d\d (?P<name>[a-z]+) *\| ")
PROCESSES = {"web", "worker", "relay", "beat", "flower"}


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


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's files in a temporary directory: the test edits a module the worker
    imports there, never in the working tree."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv", ".data", ".git", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".mypy_cache",
        "staticfiles", "node_modules", "*.log"))
    return copy


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    result = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                result.append(p)
        except psutil.NoSuchProcess:
            pass
    return result


def worker_main(launcher: psutil.Process) -> psutil.Process | None:
    """The Celery worker's main process: the child of the worker's supervisor."""
    for p in launcher.children(recursive=True):
        try:
            cmdline = p.cmdline()
            parent = p.parent()
            if "worker" in cmdline and "devtools.supervise" not in cmdline and parent \
                    and "devtools.supervise" in parent.cmdline():
                return p
        except psutil.NoSuchProcess:
            continue
    return None


def process_group(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def test_dev_up_serves_everything_reloads_the_worker_and_stops_cleanly(
        scratch_database: str, project_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web, flower = free_port(), free_port()
    broker = re.sub(r"/\d+$", "/3", os.environ["CELERY_BROKER_URL"])
    env = {**os.environ, "DATABASE_URL": scratch_database, "CELERY_BROKER_URL": broker, "REDIS_URL": broker,
           "FLOWER_BASIC_AUTH": "demo:demo-password"}
    env.pop("DEV_RELOAD", None)  # reloading is on by default
    log_path = tmp_path / "up.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "devtools.launcher", "up", "--port", str(web),
                             "--flower-port", str(flower)], cwd=project_copy, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    # Celery prefers the CELERY_BROKER_URL variable to an app's broker_url: talk to the worker of
    # `./dev up` on its own broker database.
    monkeypatch.delenv("CELERY_BROKER_URL")
    control = Celery(broker=broker, set_as_current=False)
    worker_name = f"worker@{socket.gethostname()}"
    children: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{web}"

        def answers(url: str) -> bool:
            try:
                return requests.get(url, timeout=2).status_code in (200, 401)
            except requests.RequestException:
                return False

        wait_for(lambda: answers(f"{base}/healthz"), timeout=120, message="web")
        wait_for(lambda: answers(f"http://127.0.0.1:{flower}/"), timeout=60, message="flower")
        wait_for(lambda: f"http://localhost:{web}/admin/" in log_path.read_text(), timeout=30, message="the banner")
        output = log_path.read_text()
        assert "demo / demo-password" in output

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

        launcher = psutil.Process(proc.pid)
        children = launcher.children(recursive=True)
        assert len(children) >= 5
        assert any("outbox_relay" in " ".join(c.cmdline()) for c in children)

        # Editing a module the worker imports restarts it: a new main process that answers,
        # and nothing left of the old one's process group (its prefork pool included).
        old = wait_for(lambda: worker_main(launcher), timeout=30, message="the worker's main process")
        assert control.control.ping(destination=[worker_name], timeout=2)
        old_group = process_group(old.pid)
        assert len(old_group) >= 2  # the main process and its pool
        with open(project_copy / "taskplatform" / "celery.py", "a") as module:
            module.write("\n# edited by tests/devtools/test_dev_up.py\n")

        def restarted() -> psutil.Process | None:
            new = worker_main(launcher)
            return new if new is not None and new.pid != old.pid else None

        new = wait_for(restarted, timeout=30, interval=0.2, message="the worker restarted after the edit")

        def answers_from_new_worker() -> bool:
            stats = control.control.inspect(destination=[worker_name], timeout=1).stats() or {}
            return stats.get(worker_name, {}).get("pid") == new.pid

        wait_for(answers_from_new_worker, timeout=60, interval=0.5, message="the restarted worker answering")
        assert control.control.ping(destination=[worker_name], timeout=2)
        assert not alive(old_group), f"left over from the old worker: {alive(old_group)}"
        assert "taskplatform/celery.py changed: restarting worker" in log_path.read_text()
        children = list({p.pid: p for p in children + launcher.children(recursive=True)}.values())
    finally:
        control.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(children):
        time.sleep(0.2)
    assert not alive(children)
    assert port_is_free(web) and port_is_free(flower)
    assert proc.returncode == 0

    # Every line carries the name of the process that printed it (multi-line output such as
    # the worker's banner included), the set-up steps' and the launcher's own too.
    lines = log_path.read_text().splitlines()
    unprefixed = [line for line in lines if not PREFIXED.match(line)]
    assert not unprefixed, unprefixed[:10]
    names = {PREFIXED.match(line).group("name") for line in lines}
    assert PROCESSES | {"setup", "system", "dev"} <= names
    assert any(re.match(r"^\S+ worker +\| \[tasks\]\s*$", line) for line in lines)  # inside the worker's banner


def run_launcher_code(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_each_line_is_prefixed_and_a_process_that_dies_stops_the_others() -> None:
    result = run_launcher_code("""
        import os, sys
        from devtools.launcher import run_processes
        sys.exit(run_processes({
            "talker": ["sh", "-c", "echo one; echo two >&2; printf 'three\\\\nfour\\\\n'; sleep 1; exit 3"],
            "sleeper": ["sleep", "60"],
        }, dict(os.environ)))
    """)
    lines = result.stdout.splitlines()
    assert result.returncode == 3, result.stdout + result.stderr
    talker = [line.split("| ", 1)[1] for line in lines if re.match(r"^\d\d:\d\d:\d\d talker +\| ", line)]
    assert talker == ["one", "two", "three", "four"]
    assert all(PREFIXED.match(line) for line in lines), lines
    assert "\x1b[" not in result.stdout  # colour only on a terminal
    sleeper = int(re.search(r"sleeper started \(pid=(\d+)\)", result.stdout).group(1))
    assert "sleeper stopped" in result.stdout and not psutil.pid_exists(sleeper)
    assert "stopped on its own" in result.stderr


def test_a_hangup_of_the_terminal_stops_everything() -> None:
    """Closing the terminal sends SIGHUP to the launcher's process group (honcho's helpers
    included): every process still stops, and the launcher exits."""
    code = """
        import os, sys
        from devtools.launcher import run_processes
        sys.exit(run_processes({"one": ["sleep", "60"], "two": ["sleep", "60"]}, dict(os.environ)))
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pids = []
    try:
        for line in proc.stdout:
            found = re.search(r"(one|two) started \(pid=(\d+)\)", line)
            if found:
                pids.append(int(found.group(2)))
            if len(pids) == 2:
                break
        os.killpg(proc.pid, signal.SIGHUP)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "one stopped" in rest and "two stopped" in rest
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


def test_supervise_restarts_the_whole_group_on_a_python_change(tmp_path: Path) -> None:
    watched = tmp_path / "pkg"
    watched.mkdir()
    (watched / "module.py").write_text("x = 1\n")
    # The child leaves a grandchild in its group, as a prefork worker leaves its pool; it fails
    # at once while broken.py exists, as a worker does on code that does not import.
    child = f'test -e {watched}/broken.py && exit 5; sleep 300 & echo "started $$"; wait'
    proc = subprocess.Popen([sys.executable, "-m", "devtools.supervise", "--name", "probe", "--grace", "2",
                             "--watch", str(watched), "--", "sh", "-c", child],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read_until(prefix: str) -> str:
        while True:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith(prefix):
                return line

    def started() -> int:
        return int(read_until("started ").split()[1])

    try:
        first = started()
        first_group = process_group(first)
        assert len(first_group) == 2  # sh and its sleep
        time.sleep(0.5)  # the watcher is up
        (watched / "notes.txt").write_text("not python")  # restarts nothing
        time.sleep(1)
        (watched / "module.py").write_text("x = 2\n")
        second = started()
        assert second != first
        wait_for(lambda: not alive(first_group), timeout=5, message="the old group gone")
        assert [line for line in lines if "restarting" in line] == [f"[dev] {os.path.relpath(watched / 'module.py', ROOT)}"
                                                                    " changed: restarting probe\n"]
        # Code that does not run yet after an edit: the supervisor waits for the next change.
        (watched / "broken.py").write_text("x = (\n")
        assert "it restarts on the next change" in read_until("[dev] probe exited with status 5")
        assert proc.poll() is None
        (watched / "broken.py").unlink()
        third = started()
        third_group = process_group(third)
        assert len(third_group) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
    wait_for(lambda: not alive(third_group), timeout=5, message="the group gone after SIGTERM")


def test_supervise_exits_with_the_status_of_a_child_that_dies_on_its_own(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "devtools.supervise", "--name", "probe",
                             "--watch", str(tmp_path), "--", "sh", "-c", "exit 4"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 4
    assert "probe exited with status 4" in result.stdout


def test_reload_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEV_RELOAD", raising=False)
    assert build_parser().parse_args(["up"]).reload is True
    assert build_parser().parse_args(["up", "--no-reload"]).reload is False
    monkeypatch.setenv("DEV_RELOAD", "0")
    assert build_parser().parse_args(["up"]).reload is False
    names = {path.name for path in watched_dirs()}
    assert {"taskplatform", "tasks", "dlq", "dashboard"} <= names
    assert not names & {"tests", "bench", ".venv", ".data"}
