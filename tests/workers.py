"""Real ``celery worker`` subprocesses for the tests (prefork, like production)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))


def database_url() -> str:
    """The URL of the database the tests use (pytest-django's ``test_*`` database)."""
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Worker:
    def __init__(self, *, queues: str = "celery", concurrency: int = 2, env: dict[str, str] | None = None,
                 name: str | None = None, extra_args: list[str] | None = None, log_level: str = "info",
                 log_path: Path | None = None) -> None:
        self.name = name or f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.queues = queues
        self.concurrency = concurrency
        self.env = env or {}
        self.extra_args = extra_args or []
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or ROOT / ".data" / "test-logs" / f"{self.name.split('@')[0]}.log"

    def start(self, timeout: float = 60.0) -> Worker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["DATABASE_URL"] = self.env.get("DATABASE_URL") or database_url()
        env.update(self.env)
        cmd = [CELERY, "-A", "taskplatform", "worker", "-P", "prefork", "-c", str(self.concurrency),
               "-l", self.log_level, "-n", self.name, "-Q", self.queues, "--without-mingle", "--without-gossip",
               *self.extra_args]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} {self.name}\n".encode())
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        from taskplatform.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; log: {self.log_path}\n{self.log()[-3000:]}")
            if self.env.get("CELERY_BROKER_URL"):
                # A worker on its own broker (a fault test): this process' control messages go
                # to the default broker (kombu's pidbox publishes through the app's producer
                # pool), so readiness is read from the worker's log instead.
                if f"{self.name} ready." in self.log():
                    return
                time.sleep(0.3)
                continue
            try:
                if app.control.ping(destination=[self.name], timeout=0.5):
                    return
            except Exception:  # the broker may be down (a fault test): keep waiting
                time.sleep(0.5)
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s; log:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, message: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


class RelayProcess:
    """A real ``manage.py outbox_relay`` subprocess on the tests' database (we own its group)."""

    def __init__(self, *, env: dict[str, str] | None = None, name: str = "relay", log_path: Path | None = None) -> None:
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or ROOT / ".data" / "test-logs" / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.heartbeat = self.log_path.with_suffix(".heartbeat")

    def start(self, timeout: float = 30.0) -> RelayProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.heartbeat.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DATABASE_URL": self.env.get("DATABASE_URL") or database_url(),
               "OUTBOX_RELAY_HEARTBEAT_FILE": str(self.heartbeat), "OUTBOX_RELAY_POLL_MS": "200", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "manage.py", "outbox_relay"], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.heartbeat.exists() or self.proc.poll() is not None, timeout=timeout,  # type: ignore[union-attr]
                 interval=0.1, message="the outbox relay's first heartbeat")
        if self.proc.poll() is not None:
            raise RuntimeError(f"outbox relay exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no batch is finished, nothing is cleaned up."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
