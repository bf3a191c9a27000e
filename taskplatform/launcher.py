"""What ``./dev`` runs once the virtualenv is ready: ``up``, ``test``, ``manage``, ``chaos`` and ``bench``.

``up`` runs web (:8000), one worker, the outbox relay, beat and Flower (:5555) in the
foreground; Ctrl-C stops every process it started (the apps first, then the embedded
services it started).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from taskplatform.embedded import Services, stop_process

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))


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


class Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def cmd_up(services: Services, args: argparse.Namespace) -> int:
    env = child_env(services.env)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "seed_demo")
    # Flower reads its credentials from the environment, not from its command line (which
    # every user of the machine can read in the process list).
    env.setdefault("FLOWER_BASIC_AUTH", "demo:demo-password")
    flower_auth = env["FLOWER_BASIC_AUTH"]
    data = BASE_DIR / ".data"
    data.mkdir(exist_ok=True)
    commands = {
        "web": [PYTHON, "manage.py", "runserver", f"{args.host}:{args.port}", "--noreload"],
        "worker": [CELERY, "-A", "taskplatform", "worker", "-l", "info", "-P", "prefork", "-n", "worker@%h"],
        "relay": [PYTHON, "manage.py", "outbox_relay"],
        "beat": [CELERY, "-A", "taskplatform", "beat", "-l", "info", "--pidfile", str(data / "beat.pid")],
        "flower": [
            CELERY, "-A", "taskplatform", "flower", f"--address={args.host}", f"--port={args.flower_port}",
            "--purge_offline_workers=60",
        ],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, cwd=BASE_DIR, env=env, start_new_session=True)
        user, password = os.environ.get("DEMO_USER", "demo"), os.environ.get("DEMO_PASSWORD", "demo-password")
        print(
            "\n"
            f"  Dashboard  http://localhost:{args.port}/dashboard/\n"
            f"  Admin      http://localhost:{args.port}/admin/\n"
            f"  API        http://localhost:{args.port}/api/v1/\n"
            f"  Demo page  http://localhost:{args.port}/demo/\n"
            f"  Flower     http://localhost:{args.flower_port}/  (basic auth {flower_auth})\n"
            f"  Login      {user} / {password}\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"[dev] {name} exited with status {proc.returncode}; stopping", file=sys.stderr)
                    status = 1
                    raise Stop(name)
            time.sleep(0.5)
    except (Stop, KeyboardInterrupt):
        pass
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        for name, proc in reversed(list(procs.items())):
            print(f"[dev] stopping {name}", file=sys.stderr)
            stop_process(proc, sig=signal.SIGTERM, timeout=20)
    return status


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


def main(argv: list[str] | None = None) -> int:
    # ./dev is the developer's entry point: development (DEBUG, the demo tasks, page and
    # account) is asked for here, never by default (taskplatform/settings.py).
    os.environ.setdefault("DJANGO_ENV", "development")
    parser = argparse.ArgumentParser(prog="./dev")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run web, worker, beat and Flower in the foreground")
    up.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                    help="address web and Flower listen on (default 127.0.0.1; 0.0.0.0 to serve other machines)")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    up.add_argument("--flower-port", type=int, default=int(os.environ.get("FLOWER_PORT", 5555)))
    test = sub.add_parser("test", help="run the test suite (pytest arguments may follow)")
    test.add_argument("rest", nargs=argparse.REMAINDER)
    man = sub.add_parser("manage", help="run manage.py against the same services")
    man.add_argument("rest", nargs=argparse.REMAINDER)
    chaos = sub.add_parser("chaos", help="the chaos harness: own services, faults, accounting table")
    chaos.add_argument("rest", nargs=argparse.REMAINDER)
    bench = sub.add_parser("bench", help="benchmarks against plain Celery: python -m bench.run [--quick] ...")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "chaos":
        # `./dev chaos [--tasks N] [--scenarios F1,F2] ...`: no embedded services needed.
        return cmd_chaos(argv[1:])
    if argv and argv[0] in ("test", "manage", "bench"):
        # Everything after the command goes to pytest / manage.py untouched (options too).
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = parser.parse_args(argv)

    services = Services(BASE_DIR)
    try:
        services.start()
        handler = {"up": cmd_up, "test": cmd_test, "manage": cmd_manage, "bench": cmd_bench}[args.command]
        return handler(services, args)
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main())
