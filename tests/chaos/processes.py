"""The processes the harness starts and faults, each in a process group of its own: every
process it signals is one it started (by PID, or the process group of a worker, a beat, a web
server or a relay it started).

- ``ChaosWorker``: one ``celery worker`` (prefork) with the chaos tasks.
- ``ChaosBeat``: one ``celery beat`` (F14).
- ``ChaosWeb``: ``gunicorn`` (sync workers, ``--preload``) serving only the chaos view
  (``tests.chaos.settings`` / ``tests/chaos/web.py``) on a free port (F15-F17). Faults kill
  only children of *its* master.
- ``ChaosRelay``: one outbox relay, ``python -m tests.chaos.relay`` (the product's
  ``outbox_relay`` command with a probe for aimed kills, and for F17's control the
  delete-first batch).
"""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from devtools.embedded import free_port
from tests.chaos.load import PATH
from tests.chaos.relay import HOLDING, PROBE_SIGNAL
from tests.chaos.services import CELERY, QUEUE, ROOT
from tests.workers import Worker


class ChaosWorker(Worker):
    """One ``celery worker`` (prefork) with the chaos tasks; we own its process group."""

    def __init__(self, workdir: Path, env: dict[str, str], concurrency: int, label: str) -> None:
        super().__init__(queues=QUEUE, concurrency=concurrency, env=env, log_level="warning",
                         name=f"chaos-{label}-{uuid.uuid4().hex[:6]}@localhost",
                         extra_args=["-I", "tests.chaos.tasks"], log_path=workdir / "logs" / f"{label}.log")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        if not self.alive:
            return []
        assert self.proc is not None
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.Error:
            return []

    def signal_main(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the worker and its pool processes (its own process group)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def wait_exit(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive:
            self.signal_main(signal.SIGTERM)
            if not self.wait_exit(timeout):
                self.kill_all()
        # Pool processes orphaned by a SIGKILLed parent are still in our process group.
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class GroupProcess:
    """A process started in a session (process group) of its own, its output in ``log_path``:
    SIGTERM to the group stops it, SIGKILL to the group kills it and whatever it forked."""

    #: Seconds ``stop()`` waits after the SIGTERM before it SIGKILLs the group.
    stop_timeout = 15.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, cmd: list[str], env: dict[str, str], header: str) -> None:
        """Start ``cmd`` (from the repository root), appending to the log after a start line."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} {header}\n".encode())
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the process group: nothing it holds is released or finished."""
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self, timeout: float | None = None) -> None:
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class ChaosBeat(GroupProcess):
    """One ``celery -A taskplatform beat`` process (``--max-interval 1``, the harness' env).
    ``scheduler`` None: the one the settings select. ``kill()`` leaves its leader lock held."""

    stop_timeout = 20.0

    def __init__(self, workdir: Path, env: dict[str, str], label: str, scheduler: str | None = None) -> None:
        super().__init__(workdir / "logs" / f"{label}.log")
        self.env = env
        self.scheduler = scheduler

    def start(self) -> ChaosBeat:
        cmd = [CELERY, "-A", "taskplatform", "beat", "-l", "info", "--pidfile=", "--max-interval", "1"]
        if self.scheduler:
            cmd += ["-S", self.scheduler]
        self._spawn(cmd, {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}, " ".join(cmd[1:]))
        return self


class ChaosWeb(GroupProcess):
    """``gunicorn`` with ``workers`` sync worker processes and the chaos settings.

    Explicit arguments, and an empty config file so that the project's ``gunicorn.conf.py``
    (read from the working directory by default: gthread, access log, ``max_requests``) does
    not apply. ``--preload``: the master imports Django once and forks, so a worker that a
    fault SIGKILLs is replaced in milliseconds, not after a second of imports on 2 cores.
    Nothing opens a database or broker connection at import, so no connection is shared
    across the fork."""

    def __init__(self, workdir: Path, env: dict[str, str], label: str, workers: int = 4) -> None:
        super().__init__(workdir / "logs" / f"{label}.log")
        self.env = env
        self.workers = workers
        self.port = free_port()
        self.conf = workdir / "gunicorn.chaos.conf.py"

    def start(self) -> ChaosWeb:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text("# empty: the chaos web server takes every setting from its command line\n")
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(self.conf), "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(self.workers), "--worker-class", "sync", "--timeout", "60",
               "--graceful-timeout", "5", "--preload", "--backlog", "2048", "--log-level", "warning",
               "--error-logfile", "-", "taskplatform.wsgi:application"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, "DJANGO_SETTINGS_MODULE": "tests.chaos.settings"}
        self._spawn(cmd, env, f"gunicorn :{self.port}")
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a worker answers the view (a GET: 405, nothing written)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"gunicorn exited; log {self.log_path}:\n{self.log()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", PATH)
                if conn.getresponse().status == 405:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"gunicorn not serving after {timeout}s; log:\n{self.log()[-3000:]}")

    def children(self) -> list[int]:
        if not self.alive:
            return []
        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return []
        alive = []
        for child in children:
            try:  # not the zombies: a worker killed a moment ago is one until the master reaps it
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child.pid)
            except psutil.Error:
                pass
        return alive

    def client_ports(self, pid: int) -> list[int]:
        """The client ports of the connections worker ``pid`` holds on our port (its request)."""
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return []
        return [c.raddr.port for c in conns
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port and c.raddr]

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the group, then SIGKILL it whatever happened: workers left behind by a master
        that did not stop in time are still in our process group."""
        if self.proc is None:
            return
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class ChaosRelay(GroupProcess):
    """One outbox relay process (``tests/chaos/relay.py``). ``delete_first``: F17's control."""

    def __init__(self, workdir: Path, env: dict[str, str], label: str, delete_first: bool = False) -> None:
        super().__init__(workdir / "logs" / f"{label}.log")
        self.env = env
        self.delete_first = delete_first
        self.workdir = workdir
        self.label = label
        self.heartbeat = workdir / "relay" / f"{label}.heartbeat"
        self.probe_file = workdir / "relay" / f"{label}.probe"
        self.starts = 0

    def start(self) -> ChaosRelay:
        """Start the process (without waiting: ``wait_ready``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
        self.heartbeat.unlink(missing_ok=True)
        self.probe_file.touch()
        cmd = [sys.executable, "-m", "tests.chaos.relay"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", **self.env,
               "OUTBOX_RELAY_HEARTBEAT_FILE": str(self.heartbeat), "CHAOS_RELAY_PROBE_FILE": str(self.probe_file)}
        if self.delete_first:
            env["CHAOS_CONTROL"] = "delete_first"
        self._spawn(cmd, env, " ".join(cmd[1:]))
        self.starts += 1
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.heartbeat.exists():
                return
            if not self.alive:
                raise RuntimeError(f"outbox relay exited; log {self.log_path}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"outbox relay without a heartbeat after {timeout}s; log:\n{self.log()[-3000:]}")

    @property
    def ready(self) -> bool:
        """Running its loop (it beat once): the probe is installed."""
        return self.alive and self.heartbeat.exists()

    def probe(self, timeout: float = 0.2) -> bool:
        """Ask the relay what it is doing (``tests/chaos/relay.py``): True when it holds a
        batch, and is now stopped there (SIGKILL it); False when it does not (it goes on)."""
        if not self.ready:
            return False
        assert self.proc is not None
        offset = self.probe_file.stat().st_size
        try:
            os.kill(self.proc.pid, PROBE_SIGNAL)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive:
            with open(self.probe_file) as probe:
                probe.seek(offset)
                answer = probe.readline()
            if answer.endswith("\n"):
                return answer.split(" ", 1)[0] == HOLDING
            time.sleep(0.0005)
        try:  # no answer in time: never leave it stopped by a late answer
            os.kill(self.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        return False
