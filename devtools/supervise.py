"""``python -m devtools.supervise``: run one command in a process group of its own and restart
it when the project's Python files change (``./dev up`` runs the worker and the relay under it).

Django's ``runserver`` reloads web by itself; a Celery worker and the outbox relay do not, so
this supervisor watches the ``*.py`` files (``watchfiles``), stops the whole process group
(SIGTERM first for Celery's warm shutdown, then SIGKILL so that no pool process survives its
worker) and starts the command again. See docs/development.md.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import watchfiles
from watchfiles.main import FileChange

BASE_DIR = Path(__file__).resolve().parent.parent

#: How long a supervised worker or relay gets to stop after SIGTERM (a warm shutdown lets the
#: running tasks finish) before its whole process group is killed.
STOP_GRACE_SECONDS = 10.0


def _exit_status(proc: subprocess.Popen[bytes]) -> int | None:
    """The exit status of our child (negative: killed by that signal), or None while it runs.

    On Linux the child is *not* reaped (``WNOWAIT``), so its pid, which is also its process
    group's id, cannot be reused while :func:`stop_group` still signals that group.
    """
    if proc.returncode is not None:
        return proc.returncode
    if not hasattr(os, "waitid"):  # pragma: no cover - not Linux
        return proc.poll()
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        status = proc.poll()
        return -1 if status is None else status
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def start_group(cmd: list[str]) -> subprocess.Popen[bytes]:
    """``cmd`` as the leader of a process group of its own (a prefork worker's pool joins it)."""
    return subprocess.Popen(cmd, cwd=BASE_DIR, start_new_session=True)


def stop_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> int:
    """Stop a process started by :func:`start_group`, and everything left in its group.

    SIGTERM goes to the leader first (Celery's warm shutdown stops its own pool and lets the
    running tasks finish); after ``grace`` seconds, or as soon as the leader is gone, the whole
    group gets SIGKILL, so that no pool process survives its worker. Returns the exit status.
    """
    if _exit_status(proc) is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while _exit_status(proc) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet: the group id is still ours
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait()


class _Flag:
    """Set from a signal handler (a ``threading.Event`` could deadlock there); anything with
    ``is_set()`` stops ``watchfiles.watch``."""

    def __init__(self) -> None:
        self.value = False

    def set(self, *_: object) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


def _ticks(stop: _Flag, interval: float = 0.5) -> Iterator[set[FileChange]]:
    while not stop.is_set():
        time.sleep(interval)
        yield set()


def supervise(cmd: list[str], watch: list[Path], *, name: str, grace: float = STOP_GRACE_SECONDS) -> int:
    """Run ``cmd`` in a process group of its own; with ``watch``, restart it (the old group
    stopped first: no orphans) whenever a ``*.py`` file under those directories changes.

    SIGTERM/SIGINT stop the group and return 0. A child that exits on its own ends the
    supervisor with its status (so ``./dev up`` stops everything), except after a reload: code
    being edited may not import yet, so the supervisor then waits for the next change, the
    way Django's autoreloader keeps waiting after a syntax error.
    """
    stop = _Flag()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop.set)
    proc = start_group(cmd)
    reloaded = reported = False
    if watch:
        changes_seen: Iterator[set[FileChange]] = watchfiles.watch(
            *watch, watch_filter=watchfiles.PythonFilter(), stop_event=stop, rust_timeout=500,
            yield_on_timeout=True, raise_interrupt=False,
        )
    else:
        changes_seen = _ticks(stop)
    for changes in changes_seen:
        if stop.is_set():
            break
        if changes:
            paths = sorted({os.path.relpath(path, BASE_DIR) for _, path in changes})
            shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            print(f"[dev] {shown} changed: restarting {name}", flush=True)
            stop_group(proc, grace)
            if stop.is_set():
                return 0
            proc = start_group(cmd)
            reloaded, reported = True, False
            continue
        status = _exit_status(proc)
        if status is None:
            continue
        if not watch or not reloaded:
            stop_group(proc, grace)
            print(f"[dev] {name} exited with status {status}", flush=True)
            return status if status > 0 else 1
        if not reported:
            print(f"[dev] {name} exited with status {status}; it restarts on the next change", flush=True)
            reported = True
    stop_group(proc, grace)
    return 0


def cmd_supervise(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.supervise")
    parser.add_argument("--name", default="process")
    parser.add_argument("--watch", action="append", default=[], type=Path, help="directory to watch (repeatable)")
    parser.add_argument("--grace", type=float, default=STOP_GRACE_SECONDS)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("a command is needed after --")
    return supervise(cmd, args.watch, name=args.name, grace=args.grace)


if __name__ == "__main__":
    sys.exit(cmd_supervise(sys.argv[1:]))
