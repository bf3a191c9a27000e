"""What ``./dev`` runs once the virtualenv is ready: ``up``, ``test``, ``manage``, ``chaos`` and ``bench``.

``up`` runs web (:8000), one worker, the outbox relay, beat and Flower (:5555) in the
foreground under honcho's ``Manager``: each line a process prints comes out prefixed with
the time and the process's name (coloured on a terminal; ``NO_COLOR`` turns colour off).
Ctrl-C (SIGINT) or SIGTERM stops every process it started, then the embedded services it
started; a process that stops on its own stops all the others too, and ``./dev up`` then
exits non-zero.

Reloading (development, on unless ``--no-reload`` or ``DEV_RELOAD=0``): web is Django's
``runserver`` with its autoreloader; the worker and the relay run under ``devtools.supervise``,
which restarts them when a ``*.py`` file of the project's packages changes (``watchfiles``).
Beat and Flower do not reload. See docs/development.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import honcho.manager
from honcho.printer import Message, Printer

from devtools.embedded import Services

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))

#: How long honcho waits, once it asked every process to stop, before it kills what is left.
#: Longer than devtools.supervise.STOP_GRACE_SECONDS, so that a supervisor always outlives its worker.
KILL_WAIT_SECONDS = 30
#: Top-level packages whose changes do not restart the worker and relay (not imported by them).
NOT_WATCHED = frozenset({"tests", "bench"})


def child_env(services_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(services_env)
    env.update(extra)
    env.setdefault("DJANGO_SETTINGS_MODULE", "taskplatform.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> int:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=check).returncode


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, another logical database (tests must not meet `./dev up`'s worker)."""
    base, _, last = url.rstrip("/").rpartition("/")
    return f"{base}/{db}" if last.isdigit() else f"{url.rstrip('/')}/{db}"


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def watched_dirs(base: Path = BASE_DIR) -> list[Path]:
    """The project's top-level Python packages (taskplatform, tasks, dlq, dashboard, ...): what
    the worker and the relay import, so what restarts them. Not tests/ nor bench/, and never
    .venv/ or .data/ (Postgres writes there all the time)."""
    return sorted(
        path for path in base.iterdir()
        if path.is_dir() and not path.name.startswith(".") and path.name not in NOT_WATCHED
        and (path / "__init__.py").is_file()
    )


# --- up: honcho's Manager over every process ---------------------------------------------------

class SafeOutput:
    """A stream that never raises: a closed terminal or a broken pipe (``./dev up | head``) must
    not stop the launcher half-way, it still has to stop every process and service."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BOLD = "1"  # the launcher's own lines (the banner); honcho colours each process's name


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass


def _survive_hangup(_: object) -> None:
    signal.signal(signal.SIGHUP, _ignore)


def run_processes(commands: dict[str, list[str]], env: dict[str, str], *, output: TextIO | None = None,
                  colour: bool | None = None, on_started: Callable[[Callable[[str], None]], None] | None = None) -> int:
    """Run ``commands`` (name → argv) under honcho until one stops or SIGINT/SIGTERM/SIGHUP
    arrives; stop them all and return 0 for a requested stop, non-zero when a process stopped
    on its own.

    Each process is the leader of a session of its own, started by honcho through
    ``sh -c "exec ..."``; honcho sends SIGTERM to each process group, then SIGKILL after
    KILL_WAIT_SECONDS. ``on_started(say)`` runs once they are started; ``say(text)`` prints
    lines under the name ``dev``, in order with the processes' output.
    """
    honcho.manager.KILL_WAIT = KILL_WAIT_SECONDS
    stream = output or sys.stdout
    safe_output = stream if isinstance(stream, SafeOutput) else SafeOutput(stream)
    if colour is None:
        colour = not os.environ.get("NO_COLOR")

    class Manager(honcho.manager.Manager):  # type: ignore[misc]  # honcho has no type hints
        signalled: int | None = None

        def _start(self) -> None:
            # loop() has just installed honcho's SIGINT/SIGTERM handlers: remember that the
            # stop was asked for (honcho's return code cannot tell it from a process's own),
            # and stop on SIGHUP too (the terminal closed) instead of dying with orphans.
            honcho_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

            def remember(signum: int, frame: FrameType | None) -> None:
                if self.signalled is None:
                    self.signalled = signum
                honcho_sig = signum if signum in honcho_handlers else signal.SIGTERM
                handler = honcho_handlers[signal.Signals(honcho_sig)]
                if callable(handler):  # honcho's own handlers (loop() installed them)
                    handler(honcho_sig, frame)

            for sig in STOP_SIGNALS:
                signal.signal(sig, remember)
            # honcho's helper processes (one per process, forked by _start, in our process
            # group) must outlive a hangup to report their process's end: a handler, not
            # SIG_IGN, so that the processes they exec keep the default.
            multiprocessing.util.register_after_fork(self, _survive_hangup)
            super()._start()
            if on_started is not None:
                on_started(self.say)

        def say(self, text: str) -> None:
            self.events.put(Message(type="line", data=text, time=datetime.datetime.now(), name="dev", colour=BOLD))

    manager = Manager(printer=Printer(safe_output, colour=colour, prefix=True))
    for name, cmd in commands.items():
        manager.add_process(name, "exec " + shlex.join(cmd), env=env, cwd=str(BASE_DIR))
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        manager.loop()
    except BaseException:
        with contextlib.suppress(Exception):
            manager.terminate()  # else the interpreter's exit waits for honcho's helper processes,
            # which end only when their process does
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if manager.signalled is not None:
        return 0
    print("[dev] a process stopped on its own (see above), so everything was stopped", file=sys.stderr, flush=True)
    code = manager.returncode
    return code if isinstance(code, int) and code > 0 else 1


def wait_for_listener(host: str, port: int, timeout: float, cancelled: Callable[[], bool]) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cancelled():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def run_prefixed(name: str, cmd: list[str], env: dict[str, str]) -> int:
    """A set-up step of ``up`` (migrate, seed_demo), its output prefixed like the processes'."""
    printer = Printer(sys.stdout, colour=not os.environ.get("NO_COLOR"), width=len("system"))
    proc = subprocess.Popen(cmd, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            printer.write(Message(type="line", data=line, time=datetime.datetime.now(), name=name, colour=BOLD))
    return proc.wait()


def cmd_up(services: Services, args: argparse.Namespace) -> int:
    # A closed terminal or pipe must not stop the launcher before it stopped every process and
    # the embedded services (main's finally).
    sys.stdout, sys.stderr = SafeOutput(sys.stdout), SafeOutput(sys.stderr)
    env = child_env(services.env)
    for step in (["migrate", "--noinput", "-v", "0"], ["seed_demo"]):
        status = run_prefixed("setup", [PYTHON, "manage.py", *step], env)
        if status:
            print(f"[dev] manage.py {step[0]} failed with status {status}", file=sys.stderr)
            return status
    # Flower reads its credentials from the environment, not from its command line (which
    # every user of the machine can read in the process list).
    env.setdefault("FLOWER_BASIC_AUTH", "demo:demo-password")
    flower_auth = env["FLOWER_BASIC_AUTH"]
    data = BASE_DIR / ".data"
    data.mkdir(exist_ok=True)
    reload = args.reload
    watch = watched_dirs() if reload else []

    def supervised(name: str, cmd: list[str]) -> list[str]:
        watch_args = [arg for path in watch for arg in ("--watch", str(path))]
        return [PYTHON, "-m", "devtools.supervise", "--name", name, *watch_args, "--", *cmd]

    commands = {
        "web": [PYTHON, "manage.py", "runserver", f"{args.host}:{args.port}", *([] if reload else ["--noreload"])],
        "worker": supervised("worker", [CELERY, "-A", "taskplatform", "worker", "-l", "info", "-P", "prefork",
                                        "-n", "worker@%h"]),
        "relay": supervised("relay", [PYTHON, "manage.py", "outbox_relay"]),
        "beat": [CELERY, "-A", "taskplatform", "beat", "-l", "info", "--pidfile", str(data / "beat.pid")],
        "flower": [
            CELERY, "-A", "taskplatform", "flower", f"--address={args.host}", f"--port={args.flower_port}",
            "--purge_offline_workers=60",
        ],
    }
    user, password = os.environ.get("DEMO_USER", "demo"), os.environ.get("DEMO_PASSWORD", "demo-password")
    banner = (
        "\n"
        f"  Dashboard  http://localhost:{args.port}/dashboard/\n"
        f"  Admin      http://localhost:{args.port}/admin/\n"
        f"  API        http://localhost:{args.port}/api/v1/\n"
        f"  Demo page  http://localhost:{args.port}/demo/\n"
        f"  Flower     http://localhost:{args.flower_port}/  (basic auth {flower_auth})\n"
        f"  Login      {user} / {password}\n"
        + ("  Reloading  web, worker and relay restart when a .py file changes (--no-reload turns it off)\n" if reload
           else "  Reloading  off\n")
        + "  Ctrl-C stops everything.\n"
    )
    finished = threading.Event()

    def announce(say: Callable[[str], None]) -> None:
        def when_web_listens() -> None:
            wait_for_listener(args.host, args.port, 120, finished.is_set)
            if not finished.is_set():
                say(banner)
        threading.Thread(target=when_web_listens, name="banner", daemon=True).start()

    try:
        return run_processes(commands, env, on_started=announce)
    finally:
        finished.set()
        # The embedded services stop next (main's finally): no second Ctrl-C may cut that short.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def cmd_test(services: Services, args: argparse.Namespace) -> int:
    extra: dict[str, str] = {}
    if "CELERY_BROKER_URL" not in os.environ:
        # The embedded Redis may be shared with a running `./dev up`: use another database.
        extra["CELERY_BROKER_URL"] = with_redis_db(services.env["CELERY_BROKER_URL"], 1)
        extra["REDIS_URL"] = with_redis_db(services.env["REDIS_URL"], 1)
    env = child_env(services.env, **extra)
    return subprocess.run([PYTHON, "-m", "pytest", *args.rest], cwd=BASE_DIR, env=env).returncode


def cmd_manage(services: Services, args: argparse.Namespace) -> int:
    return manage(child_env(services.env), *args.rest, check=False)


def cmd_bench(services: Services, args: argparse.Namespace) -> int:
    """The benchmarks (bench/run.py) on the same servers as ``./dev test``: they create their
    own database (``<name>_bench``) and use Redis database 5 there, so nothing else is touched."""
    env = child_env(services.env)
    return subprocess.run([PYTHON, "-m", "bench.run", *args.rest], cwd=BASE_DIR, env=env).returncode


def cmd_chaos(rest: list[str]) -> int:
    """The chaos harness (tests/chaos): it starts its own Postgres, Redis and workers on free
    ports, so it needs none of the services above."""
    env = child_env({})
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(name, None)  # the harness points every process at its own services
    return subprocess.run([PYTHON, "-m", "tests.chaos", *rest], cwd=BASE_DIR, env=env).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./dev")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run web, worker, the outbox relay, beat and Flower in the foreground")
    up.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                    help="address web and Flower listen on (default 127.0.0.1; 0.0.0.0 to serve other machines)")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)), help="web's port (default 8000)")
    up.add_argument("--flower-port", type=int, default=int(os.environ.get("FLOWER_PORT", 5555)),
                    help="Flower's port (default 5555)")
    up.add_argument("--no-reload", dest="reload", action="store_false", default=env_flag("DEV_RELOAD", True),
                    help="do not restart web, worker and relay on code changes (also DEV_RELOAD=0)")
    test = sub.add_parser("test", help="run the test suite (pytest arguments may follow)")
    test.add_argument("rest", nargs=argparse.REMAINDER)
    man = sub.add_parser("manage", help="run manage.py against the same services")
    man.add_argument("rest", nargs=argparse.REMAINDER)
    chaos = sub.add_parser("chaos", help="the chaos harness: own services, faults, accounting table")
    chaos.add_argument("rest", nargs=argparse.REMAINDER)
    bench = sub.add_parser("bench", help="benchmarks against plain Celery: python -m bench.run [--quick] ...")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    # ./dev is the developer's entry point: development (DEBUG, the demo tasks, page and
    # account) is asked for here, never by default (taskplatform/settings.py).
    os.environ.setdefault("DJANGO_ENV", "development")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "chaos":
        # `./dev chaos [--tasks N] [--scenarios F1,F2] ...`: no embedded services needed.
        return cmd_chaos(argv[1:])
    if argv and argv[0] in ("test", "manage", "bench"):
        # Everything after the command goes to pytest / manage.py untouched (options too).
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)

    services = Services(BASE_DIR)
    try:
        services.start()
        handler = {"up": cmd_up, "test": cmd_test, "manage": cmd_manage, "bench": cmd_bench}[args.command]
        return handler(services, args)
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main())
