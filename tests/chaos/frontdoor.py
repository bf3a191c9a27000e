"""The front door (F15-F17): a real web server, outbox relays and an HTTP load, on the
harness' Postgres and Redis.

- ``ChaosWeb``: ``gunicorn`` (sync workers, ``--preload``) serving only the chaos view
  (``tests.chaos.settings`` / ``tests/chaos/web.py``) on a free port, in a process group of
  its own. Faults kill only children of *its* master.
- ``ChaosRelay``: one outbox relay, ``python -m tests.chaos.relay`` (the product's
  ``outbox_relay`` command with a probe for aimed kills, and for F17's control the
  delete-first batch), in a process group of its own.
- ``Load``: ``POST /chaos/order`` once per key from a pool of client threads, optionally at a
  steady rate, with a client timeout; it records which keys got a 2xx, the other answers and
  the connection errors.
- ``account_orders``: the accounting of these scenarios (see ``docs/reliability.md``): the keys
  to account are those whose ``chaos_order`` row committed plus those that got a 2xx; a key is
  lost when its task left no effect and no dead letter, and a 2xx without a committed row is a
  loss too (the answer lied).
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from taskplatform.embedded import free_port

if TYPE_CHECKING:
    from tests.chaos.harness import Row, Run

ROOT = Path(__file__).resolve().parents[2]
PATH = "/chaos/order"


class ChaosWeb:
    """``gunicorn`` with ``workers`` sync worker processes and the chaos settings.

    Explicit arguments, and an empty config file so that the project's ``gunicorn.conf.py``
    (read from the working directory by default: gthread, access log, ``max_requests``) does
    not apply. ``--preload``: the master imports Django once and forks, so a worker that a
    fault SIGKILLs is replaced in milliseconds, not after a second of imports on 2 cores.
    Nothing opens a database or broker connection at import, so no connection is shared
    across the fork."""

    def __init__(self, workdir: Path, env: dict[str, str], label: str, workers: int = 4) -> None:
        self.env = env
        self.workers = workers
        self.port = free_port()
        self.log_path = workdir / "logs" / f"{label}.log"
        self.conf = workdir / "gunicorn.chaos.conf.py"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "ChaosWeb":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text("# empty: the chaos web server takes every setting from its command line\n")
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(self.conf), "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(self.workers), "--worker-class", "sync", "--timeout", "60",
               "--graceful-timeout", "5", "--preload", "--backlog", "2048", "--log-level", "warning",
               "--error-logfile", "-", "taskplatform.wsgi:application"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, "DJANGO_SETTINGS_MODULE": "tests.chaos.settings"}
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} gunicorn :{self.port}\n".encode())
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
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
        import psutil

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
        import psutil

        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return []
        return [c.raddr.port for c in conns
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port and c.raddr]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:  # workers left behind by a master that did not stop in time: our process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class ChaosRelay:
    """One outbox relay process (``tests/chaos/relay.py``). ``delete_first``: F17's control."""

    def __init__(self, workdir: Path, env: dict[str, str], label: str, delete_first: bool = False) -> None:
        self.env = env
        self.delete_first = delete_first
        self.workdir = workdir
        self.label = label
        self.log_path = workdir / "logs" / f"{label}.log"
        self.heartbeat = workdir / "relay" / f"{label}.heartbeat"
        self.probe_file = workdir / "relay" / f"{label}.probe"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "ChaosRelay":
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
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} {' '.join(cmd[1:])}\n".encode())
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
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
        from tests.chaos.relay import HOLDING, PROBE_SIGNAL

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

    def kill(self) -> None:
        """SIGKILL the relay's process group: the batch in hand is not finished."""
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class LoadResult:
    sent: int = 0
    ok: set[str] = field(default_factory=set)  # keys answered with a 2xx
    statuses: Counter[int] = field(default_factory=Counter)  # non-2xx answers by status
    errors: Counter[str] = field(default_factory=Counter)  # no answer: timeout / connection
    seconds: float = 0.0


class Load:
    """One ``POST /chaos/order`` per key from ``threads`` client threads; ``rate`` (requests/s)
    paces the sends (None: as fast as the server answers). Each request has its own
    connection and a client timeout of ``timeout`` seconds; it is never retried (a retry would
    be a second request for the key)."""

    def __init__(self, port: int, keys: list[str], *, threads: int = 16, rate: float | None = None,
                 timeout: float = 30.0, inflight: dict[int, str] | None = None) -> None:
        self.port = port
        self.keys = keys
        self.threads = threads
        self.rate = rate
        self.timeout = timeout
        self.result = LoadResult()
        #: client port -> key of every request waiting for its answer (F16 aims with it)
        self.inflight = inflight if inflight is not None else {}
        self._lock = threading.Lock()

    def _post(self, key: str) -> None:
        status: int | None = None
        error = ""
        port = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.connect()
            port = conn.sock.getsockname()[1]
            self.inflight[port] = key
            conn.request("POST", PATH, body=urlencode({"key": key}),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            response.read()
            status = response.status
        except (TimeoutError, socket.timeout):
            error = "timeout"
        except (OSError, http.client.HTTPException):
            error = "connection"
        finally:
            self.inflight.pop(port, None)
            conn.close()
        with self._lock:
            self.result.sent += 1
            if status is not None and 200 <= status < 300:
                self.result.ok.add(key)
            elif status is not None:
                self.result.statuses[status] += 1
            else:
                self.result.errors[error] += 1

    def run(self) -> LoadResult:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="chaos-client") as pool:
            for i, key in enumerate(self.keys):
                if self.rate:
                    delay = started + i / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                pool.submit(self._post, key)
        self.result.seconds = round(time.monotonic() - started, 1)
        return self.result


def order_keys(label: str, n: int) -> list[str]:
    return [f"{label}-{i:05d}" for i in range(n)]


def account_orders(proof: str) -> Callable[["Run", "Row"], None]:
    """The accounting of a front-door variant (F15-F17), see the module docstring. ``proof``
    names the counter (``Run.counts``) that shows the fault landed while the load ran
    (e.g. ``web worker kills``): without it the variant's zeros prove nothing (ERROR)."""
    def account(run: "Run", row: "Row") -> None:
        _account(run, row, proof)
    return account


def _account(run: "Run", row: "Row", proof: str) -> None:
    from tests.chaos.harness import sql

    result: LoadResult = run.load_result or LoadResult()
    committed = {key for (key,) in sql(run.pg, "SELECT key FROM chaos_order")}
    keys = committed | result.ok
    effects: Counter[str] = Counter()
    for key, count in sql(run.pg, "SELECT key, count(*) FROM chaos_effect GROUP BY key"):
        effects[key] = int(count)
    runs: Counter[str] = Counter()
    for key, count in sql(run.pg, "SELECT key, count(*) FROM chaos_run GROUP BY key"):
        runs[key] = int(count)
    dead: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for arg_key, reason in sql(run.pg, "SELECT args->>0, reason FROM dlq_deadletter"):
        dead[arg_key] += 1
        reasons[reason] += 1
    examples: dict[str, list[str]] = {}
    lies = 0
    for key in sorted(keys):
        ok, dl = effects[key] > 0, dead[key] > 0
        lie = key in result.ok and key not in committed
        lies += lie
        row.succeeded += ok
        row.dead_lettered += dl
        found = {"lost": lie or (not ok and not dl), "2xx without a row": lie, "both": ok and dl,
                 "dup DL": dead[key] > 1, "dup SE": effects[key] > 1}
        row.lost += found["lost"]
        row.both += found["both"]
        row.duplicate_dead_letters += found["dup DL"]
        row.duplicate_effects += found["dup SE"]  # every chaos_order task is declared idempotent
        for column, hit in found.items():
            if hit and len(examples.setdefault(column, [])) < 5:
                examples[column].append(key)
    twice = sorted(key for key, n in runs.items() if n > 1)
    row.duplicate_runs = len(twice)
    if twice:
        examples["ran twice"] = twice[:5]
    strays = sorted(set(effects) - keys)  # a task ran for a row that never committed
    if strays:
        examples["ran without a row"] = strays[:5]
    row.attempted = len(keys)
    row.requests = result.sent
    row.reasons = dict(sorted(reasons.items()))
    row.examples = {column: found for column, found in examples.items() if found}
    non_2xx = sum(result.statuses.values())
    statuses = ", ".join(f"{status} x{n}" for status, n in sorted(result.statuses.items()))
    errors = sum(result.errors.values())
    kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(result.errors.items()))
    notes = [f"{result.sent} requests in {result.seconds:.0f}s, {len(result.ok)} 2xx, {len(committed)} rows committed, "
             f"{non_2xx} non-2xx{f' ({statuses})' if statuses else ''}, {errors} connection errors"
             f"{f' ({kinds})' if kinds else ''}"]
    if lies:
        notes.append(f"{lies} 2xx without a committed row")
    extra = sum(n - 1 for n in runs.values() if n > 1)
    notes.append(f"{len(twice)} keys ran more than once ({extra} extra runs)")
    if strays:
        notes.append(f"{len(strays)} tasks ran without a committed row")
    # What the fault did: its total first, then the "of them ..." breakdown.
    parts = [f"{n} {what.removeprefix('of them ')}" for what, n in sorted(run.counts.items(), key=lambda c: -c[1])
             if what.startswith("of them ")]
    for what, n in sorted(run.counts.items()):
        if not what.startswith("of them "):
            notes.append(f"{n} {what}{' (' + ', '.join(parts) + ')' if parts else ''}")
    if result.sent != len(run.load_keys):
        row.error = f"the load sent {result.sent} of {len(run.load_keys)} requests"
    elif not run.counts.get(proof):
        row.error = f"the fault did not land during the load (no {proof})"
    row.notes = "; ".join(([row.error] if row.error else []) + notes)
