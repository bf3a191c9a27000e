"""The bench's outbox relay: the process (``python -m bench.relay [outbox_relay options]``) and
the handle the scenarios start it with (``RelayProcess``, ``relay()``).

The process is the real ``manage.py outbox_relay`` command, with the bench tasks registered in
it. A relay builds each message with its task's own options, as ``apply_async`` would, when the
task is registered in its process (``outbox_relay`` imports the apps' task modules; the bench
tasks are not in an app). This is the relay's equivalent of the bench workers' ``-I
bench.tasks``; everything else is the command as ``./dev up`` and docker-compose run it.

The relay stops itself (SIGTERM, so it finishes its batch) when the bench that started it is
gone, so a bench killed with SIGKILL leaves no relay behind.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import ROOT


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), name="orphan-watch", daemon=True).start()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskplatform.settings")
    import django

    django.setup()
    from django.core.management import call_command

    import bench.tasks  # noqa: F401  (registers the bench tasks)

    call_command("outbox_relay", *(sys.argv[1:] if argv is None else argv))


class RelayProcess:
    """A real outbox relay (``python -m bench.relay``: ``manage.py outbox_relay`` with the bench
    tasks registered) on the bench's database and Redis, with a heartbeat file of its own.

    ``started_at()`` is the relay's start signal: the ``time.time()`` its loop writes to the
    heartbeat file right before its first batch (after Django and Celery are loaded and the
    system checks ran), read from outside without touching the relay."""

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.dir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
        self.heartbeat = self.dir / "heartbeat"
        self.log_path = self.dir / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started: float | None = None

    def start(self) -> RelayProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OUTBOX_RELAY_HEARTBEAT_FILE": str(self.heartbeat), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.relay"], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def started_at(self, timeout: float = 60.0) -> float:
        """The first heartbeat's ``time.time()`` (waits for it; polled every 2 ms, and the relay
        beats at most once a second, so the first value read is the first beat)."""
        deadline = time.monotonic() + timeout
        while self._started is None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"outbox relay exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            beat: float | None
            try:
                beat = float(self.heartbeat.read_text())
            except (OSError, ValueError):  # not written yet, or caught between truncate and write
                beat = None
            if beat is not None and abs(time.time() - beat) < 60:  # (and not a half-written number)
                self._started = beat
            elif time.monotonic() > deadline:
                raise TimeoutError(f"outbox relay not started after {timeout}s:\n{self.log()[-3000:]}")
            else:
                time.sleep(0.002)
        return self._started

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (the relay finishes its batch and exits), SIGKILL after 20 s."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def relay(*, env: dict[str, str] | None = None, wait_started: bool = True) -> Iterator[RelayProcess]:
    """A running ``RelayProcess``, stopped on exit; by default its loop has started."""
    process = RelayProcess(env=env).start()
    try:
        if wait_started:
            process.started_at()
        yield process
    finally:
        process.stop()


if __name__ == "__main__":
    main()
