"""The chaos harness: our own Postgres, Redis and ``celery worker`` processes on free ports,
seeded tasks, one fault per run, quiescence, reconciliation, then one accounting row.

The harness process itself is configured (``configure()``) *before* Django is imported:
its settings point at the harness' services, never at the developer's or the test suite's.
Every process it signals is one it started (by PID, or the process group of a worker or a
``celery beat`` it started).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskplatform.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tests.chaos.frontdoor import ChaosRelay, ChaosWeb, LoadResult
from tests.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
QUEUE = "celery"
# kombu's Redis transport keeps priorities in separate lists named queue + "\x06\x16" + step.
QUEUE_LISTS = [QUEUE] + [f"{QUEUE}\x06\x16{p}" for p in (3, 6, 9)]
VISIBILITY_TIMEOUT = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS chaos_effect (id bigserial PRIMARY KEY, key text NOT NULL, idempotent boolean NOT NULL,
                                         pid integer, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS chaos_effect_key ON chaos_effect (key);
CREATE TABLE IF NOT EXISTS chaos_done (key text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS chaos_tick (id bigserial PRIMARY KEY, name text NOT NULL, pid integer,
                                       at timestamptz NOT NULL DEFAULT now());
-- The scheduled time a beat tick carried (dlq_scheduled_at); NULL when it carried none.
ALTER TABLE chaos_tick ADD COLUMN IF NOT EXISTS scheduled_at bigint;
-- F15-F17: the business row the chaos view commits with its task (tests/chaos/web.py), and one
-- row per execution of chaos.work when CHAOS_COUNT_RUNS=1 (duplicate deliveries).
CREATE TABLE IF NOT EXISTS chaos_order (key text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS chaos_run (id bigserial PRIMARY KEY, key text NOT NULL, pid integer,
                                      at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS chaos_run_key ON chaos_run (key);
"""
# tasks_outboxmessage: a variant that timed out must not leave messages for the next one's relays.
RESET = ("TRUNCATE chaos_effect, chaos_done, chaos_tick, chaos_order, chaos_run, tasks_outboxmessage, dlq_effectkey, "
         "dlq_deadletterevent, dlq_deadletter, django_celery_results_taskresult RESTART IDENTITY CASCADE")


@dataclass
class TaskSpec:
    key: str
    kind: str  # ok, retry, fail, crash, slow, stubborn, unknown, pickle
    idempotent: bool = True
    param: float = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    scenario: str
    variant: str  # "fault" or "control"
    fault: str
    control: str
    attempted: int = 0
    succeeded: int = 0
    dead_lettered: int = 0
    lost: int = 0
    both: int = 0
    duplicate_dead_letters: int = 0
    duplicate_effects: int = 0  # among tasks declared idempotent
    duplicate_effects_not_idempotent: int = 0  # informational: at-least-once delivery made visible
    #: F15-F17 (informational): keys whose task ran more than once (``chaos_run``), e.g. a
    #: batch a killed relay published and another relay published again.
    duplicate_runs: int = 0
    #: F15-F17: HTTP requests sent (``attempted`` is then the keys accounted: rows committed
    #: plus keys answered 2xx).
    requests: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: The keys behind each non-zero failure column (the first few), to trace in the worker logs.
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    timed_out: bool = False
    expect: str = "pass"  # pass, detect (a negative control), broker_loss (F5), not_covered
    #: Set when the variant did not exercise its fault as designed (e.g. no beat tick ran):
    #: its zeros prove nothing, so it neither passes nor counts as a detection.
    error: str = ""
    notes: str = ""

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.both == 0 and self.duplicate_dead_letters == 0 and self.duplicate_effects == 0

    @property
    def verdict(self) -> str:
        if self.expect == "not_covered":
            return "NOT COVERED"
        if self.error:
            return "ERROR"
        if self.expect == "detect":
            return "DETECTED" if not self.clean else "MISSED"
        if self.expect == "broker_loss":
            return "BROKER LOSS" if not self.clean else "no loss"
        return "PASS" if self.clean and not self.timed_out else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean, "verdict": self.verdict}


def configure(workdir: Path) -> tuple[EmbeddedPostgres, EmbeddedRedis]:
    """Start our own Postgres and Redis, point this process' environment at them, migrate."""
    workdir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(workdir / "pg", free_port(), database="chaos")
    rd = EmbeddedRedis(workdir / "redis", free_port(), appendonly=True)
    pg.start()
    try:
        rd.start()
        _configure(pg, rd, workdir)
    except BaseException:
        rd.stop()
        pg.stop()
        raise
    return pg, rd


def _configure(pg: EmbeddedPostgres, rd: EmbeddedRedis, workdir: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="taskplatform.settings",
        DATABASE_URL=pg.url,
        CELERY_BROKER_URL=rd.url,
        REDIS_URL=rd.url,
        CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
        # kombu restores unacked messages only every ~100 s by default; F9/F10 need it within a run.
        CELERY_UNACKED_RESTORE_SECONDS="2",
        TASK_RETRY_BACKOFF="1",
        TASK_RETRY_BACKOFF_MAX="2",
        TASK_DEFAULT_MAX_RETRIES="3",
        DLQ_SPOOL_DIR=str(workdir / "spool"),
        DB_CONNECT_TIMEOUT="2",
        LOG_LEVEL="WARNING",
        # Time limits below the visibility timeout (the dlq.E002 check); F10 raises them per message.
        TASK_DEFAULT_SOFT_TIME_LIMIT="10",
        TASK_DEFAULT_TIME_LIMIT="15",
    )
    # --skip-checks: dlq.E002 refuses time limits above our deliberately short visibility timeout.
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0", "--skip-checks"], cwd=ROOT, env=dict(os.environ),
                   check=True)
    import django

    django.setup()
    sql(pg, SCHEMA)


def sql(pg: EmbeddedPostgres, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=pg.database, autocommit=True,
                         connect_timeout=3) as conn:
        cur = conn.execute(statement, params or None)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def redis_client(rd: EmbeddedRedis) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=rd.port, socket_timeout=2, socket_connect_timeout=2)


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
        import psutil

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


class ChaosBeat:
    """One ``celery -A taskplatform beat`` process (``--max-interval 1``, the harness' env);
    we own its process group. ``scheduler`` None: the one the settings select."""

    def __init__(self, workdir: Path, env: dict[str, str], label: str, scheduler: str | None = None) -> None:
        self.env = env
        self.scheduler = scheduler
        self.log_path = workdir / "logs" / f"{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "ChaosBeat":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [CELERY, "-A", "taskplatform", "beat", "-l", "info", "--pidfile=", "--max-interval", "1"]
        if self.scheduler:
            cmd += ["-S", self.scheduler]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} {' '.join(cmd[1:])}\n".encode())
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the beat's process group: it dies without releasing its leader lock."""
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass


class Run:
    """One scenario variant: what a fault function may touch."""

    def __init__(self, harness: "Harness", env: dict[str, str], concurrency: int, label: str) -> None:
        self.harness = harness
        self.env = env
        self.concurrency = concurrency
        self.label = label
        self.workers: list[ChaosWorker] = []
        self.beats: list[ChaosBeat] = []
        self._beats_lock = threading.Lock()  # no beat (re)starts once stop_beats() began
        self._beats_stopped = False
        self.drained = threading.Event()  # set when the backlog is gone (faults stop repeating)
        self.rng = random.Random(f"{harness.seed}-{label}")
        self.events: list[str] = []
        #: What a fault did, counted for the row's notes (e.g. leader kills).
        self.counts: Counter[str] = Counter()
        # The front door (F15-F17): web servers, outbox relays, the HTTP load and its outcome.
        self.webs: list[ChaosWeb] = []
        self.relays: list[ChaosRelay] = []
        self._relays_stopped = False
        self.load_keys: list[str] = []
        self.load_result: LoadResult | None = None
        self.inflight: dict[int, str] = {}  # client port -> key, while the request waits (frontdoor.Load)
        self.load_done = threading.Event()

    @property
    def pg(self) -> EmbeddedPostgres:
        return self.harness.pg

    @property
    def rd(self) -> EmbeddedRedis:
        return self.harness.rd

    def log(self, event: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {event}")
        if self.harness.verbose:
            print(f"    {time.strftime('%H:%M:%S')} [{self.label}] {event}", file=sys.stderr, flush=True)

    def new_worker(self, env: dict[str, str] | None = None) -> ChaosWorker:
        worker = ChaosWorker(self.harness.workdir, {**self.env, **(env or {})}, self.concurrency,
                             f"{self.label}-{len(self.workers)}")
        self.workers.append(worker.start())
        return worker

    @property
    def worker(self) -> ChaosWorker:
        return self.workers[-1]

    def new_beat(self, scheduler: str | None = None, env: dict[str, str] | None = None) -> ChaosBeat:
        beat = ChaosBeat(self.harness.workdir, {**self.env, **(env or {})}, f"{self.label}-beat-{len(self.beats)}",
                         scheduler)
        with self._beats_lock:
            if not self._beats_stopped:
                self.beats.append(beat.start())
        return beat

    def restart_beat(self, beat: ChaosBeat) -> None:
        """SIGKILL ``beat`` and start it again (same scheduler, same log)."""
        beat.kill()
        with self._beats_lock:
            if not self._beats_stopped:
                beat.start()

    def stop_beats(self) -> None:
        with self._beats_lock:
            self._beats_stopped = True
        for beat in self.beats:
            beat.stop()

    def sleep(self, seconds: float) -> bool:
        """Sleep; False when the backlog drained meanwhile (the fault loop should stop)."""
        return not self.drained.wait(seconds)

    # --- the front door (F15-F17) -----------------------------------------------------------
    def new_web(self, workers: int = 4) -> ChaosWeb:
        """Start a chaos web server (not waiting for it: ``wait_frontdoor``)."""
        web = ChaosWeb(self.harness.workdir, self.env, f"{self.label}-web-{len(self.webs)}", workers)
        self.webs.append(web.start())
        return web

    @property
    def web(self) -> ChaosWeb:
        return self.webs[-1]

    def new_relay(self, *, delete_first: bool = False, env: dict[str, str] | None = None) -> ChaosRelay:
        """Start an outbox relay (not waiting for it: ``wait_frontdoor``)."""
        relay = ChaosRelay(self.harness.workdir, {**self.env, **(env or {})},
                           f"{self.label}-relay-{len(self.relays)}", delete_first)
        self.relays.append(relay.start())
        return relay

    def restart_relay(self, relay: ChaosRelay) -> None:
        """SIGKILL ``relay`` and start it again (same command, same log)."""
        relay.kill()
        if not self._relays_stopped:
            relay.start()

    def ensure_relays(self) -> None:
        for relay in self.relays:
            if not relay.alive and not self._relays_stopped:
                self.log(f"relay {relay.label} found dead; starting it again")
                relay.start()

    def wait_frontdoor(self) -> None:
        for web in self.webs:
            web.wait_ready()
        for relay in self.relays:
            relay.wait_ready()

    def stop_webs(self) -> None:
        for web in self.webs:
            web.stop()

    def stop_relays(self) -> None:
        self._relays_stopped = True
        for relay in self.relays:
            relay.stop()

    def backlog(self) -> int | None:
        return self.harness.backlog()


class Harness:
    def __init__(self, workdir: Path, *, seed: int = 42, concurrency: int = 4, verbose: bool = True) -> None:
        self.workdir = workdir
        self.seed = seed
        self.concurrency = concurrency
        self.verbose = verbose
        self.pg, self.rd = configure(workdir)

    def close(self) -> None:
        self.rd.stop()
        self.pg.stop()

    # --- services -------------------------------------------------------------------------
    def restart_redis(self, *, appendonly: bool = True, sig: int = signal.SIGTERM, down: float = 1.0,
                      fsync: str = "everysec") -> None:
        self.rd.stop(sig=sig)
        if not appendonly:
            # What a Redis without persistence comes back with: nothing.
            for path in (self.rd.data_dir / "appendonly.aof", self.rd.data_dir / "dump.rdb"):
                path.unlink(missing_ok=True)
        time.sleep(down)
        self.rd.appendonly = appendonly
        self.start_redis(fsync=fsync)

    def start_redis(self, fsync: str = "everysec") -> None:
        self.rd.start()
        if fsync != "everysec":
            redis_client(self.rd).config_set("appendfsync", fsync)

    def ensure_services(self) -> None:
        if self.rd.proc is None or self.rd.proc.poll() is not None:
            self.rd.proc = None
            self.rd.appendonly = True
            self.start_redis()
        elif self.rd.proc is not None:
            try:
                os.kill(self.rd.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if self.pg.proc is None or self.pg.proc.poll() is not None:
            self.pg.proc = None
            self.pg.start()

    def reset(self) -> None:
        self.ensure_services()
        client = redis_client(self.rd)
        client.config_set("appendonly", "yes")
        client.config_set("appendfsync", "everysec")
        client.flushall()
        sql(self.pg, RESET)
        spool = Path(os.environ["DLQ_SPOOL_DIR"])
        if spool.exists():
            for path in spool.glob("*.json"):
                path.unlink()

    # --- observation ----------------------------------------------------------------------
    def backlog(self) -> int | None:
        """Messages queued or delivered-but-unacked (ETA retries included); None when Redis is away."""
        try:
            client = redis_client(self.rd)
            pipe = client.pipeline()
            for name in QUEUE_LISTS:
                pipe.llen(name)
            pipe.hlen("unacked")
            return int(sum(pipe.execute()))
        except Exception:
            return None

    def outbox(self) -> int | None:
        """Messages committed to the outbox and not yet published; None when Postgres is away."""
        try:
            return int(sql(self.pg, "SELECT count(*) FROM tasks_outboxmessage")[0][0])
        except Exception:
            return None

    def spooled(self) -> int | None:
        spool = Path(os.environ["DLQ_SPOOL_DIR"])
        files = len(list(spool.glob("*.json"))) if spool.exists() else 0
        try:
            return int(redis_client(self.rd).llen("dlq:spool")) + files
        except Exception:
            return None

    def progress(self) -> tuple[int, int] | None:
        try:
            return (int(sql(self.pg, "SELECT count(*) FROM chaos_effect")[0][0]),
                    int(sql(self.pg, "SELECT count(*) FROM dlq_deadletter")[0][0]))
        except Exception:
            return None

    # --- publishing -----------------------------------------------------------------------
    def publish(self, specs: list[TaskSpec]) -> None:
        import pickle

        from kombu import Producer

        from taskplatform.celery import app

        with app.producer_or_acquire() as producer:
            for spec in specs:
                if spec.kind == "unknown":
                    app.send_task("chaos.no_such_task", args=[spec.key, spec.kind], task_id=spec.key,
                                  producer=producer)
                elif spec.kind == "pickle":
                    body = pickle.dumps(([spec.key, "ok"], {}, {}))
                    Producer(producer.channel).publish(
                        body, exchange="", routing_key=QUEUE, serializer=None,
                        content_type="application/x-python-serialize", content_encoding="binary",
                        headers={"id": spec.key, "task": "chaos.work", "lang": "py"})
                else:
                    app.send_task("chaos.work", args=[spec.key, spec.kind, spec.idempotent, spec.param],
                                  task_id=spec.key, producer=producer, **spec.options)

    # --- quiescence and reconciliation ----------------------------------------------------
    def wait_quiet(self, run: Run, timeout: float, stable_for: float = 4.0) -> bool:
        deadline = time.monotonic() + timeout
        last: Any = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            for worker in run.workers[-1:]:
                if not worker.alive:
                    run.log("worker found dead; starting another")
                    run.new_worker()
            run.ensure_relays()
            # The outbox (F15-F17; always empty otherwise) must be empty too: rows waiting
            # for a relay that backs off are not quiet.
            state = (self.backlog(), self.spooled(), self.progress(), self.outbox())
            if state != last:
                last, since = state, time.monotonic()
            elif state[0] == 0 and state[2] is not None and state[3] == 0 and time.monotonic() - since >= stable_for:
                return True
            time.sleep(0.5)
        return False

    def reconcile(self, run: Run, timeout: float = 60.0) -> bool:
        """Drain the capture spool (the ``dlq.reconcile`` task, as beat would run it); False
        when the spool was empty to begin with (nothing was sent)."""
        from taskplatform.celery import app

        deadline = time.monotonic() + timeout
        sent = False
        while time.monotonic() < deadline:
            left = self.spooled()
            if left == 0:
                return sent
            run.log(f"reconciling: {left} spooled")
            app.send_task("dlq.reconcile", queue=QUEUE)
            sent = True
            time.sleep(2)
        run.log("spool not drained in time")
        return sent

    # --- accounting -----------------------------------------------------------------------
    def account(self, specs: list[TaskSpec], row: Row) -> Row:
        by_key = {s.key: s for s in specs}
        effects: Counter[str] = Counter()
        for key, count in sql(self.pg, "SELECT key, count(*) FROM chaos_effect GROUP BY key"):
            effects[key] = int(count)
        dead: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for task_id, arg_key, reason in sql(self.pg, "SELECT task_id, args->>0, reason FROM dlq_deadletter"):
            key = task_id if task_id in by_key else arg_key
            if key in by_key:
                dead[key] += 1
                reasons[reason] += 1
        row.attempted = len(specs)
        examples: dict[str, list[str]] = {}
        for spec in specs:
            ok, dl = effects[spec.key] > 0, dead[spec.key] > 0
            row.succeeded += ok
            row.dead_lettered += dl
            found = {
                "lost": not ok and not dl,
                "both": ok and dl,
                "dup DL": dead[spec.key] > 1,
                "dup SE": effects[spec.key] > 1 and spec.idempotent,
            }
            row.lost += found["lost"]
            row.both += found["both"]
            row.duplicate_dead_letters += found["dup DL"]
            if effects[spec.key] > 1:
                if spec.idempotent:
                    row.duplicate_effects += 1
                else:
                    row.duplicate_effects_not_idempotent += 1
            for column, hit in found.items():
                if hit and len(examples.setdefault(column, [])) < 5:
                    examples[column].append(spec.key)
        row.reasons = dict(sorted(reasons.items()))
        row.examples = {column: keys for column, keys in examples.items() if keys}
        return row

    # --- one variant ----------------------------------------------------------------------
    def run(self, *, scenario: str, variant: str, fault_name: str, control: str, specs: list[TaskSpec],
            fault: Callable[[Run], None] | None, expect: str, env: dict[str, str] | None = None,
            workers: int = 1, timeout: float = 240.0, before: Callable[[Run], None] | None = None,
            after: Callable[[Run], None] | None = None,
            account: Callable[[Run, Row], None] | None = None,
            load: Callable[[Run], LoadResult] | None = None) -> Row:
        """One variant. Without ``specs`` (F14: the load comes from beat) the fault runs its own
        course, up to ``timeout``; ``account`` then replaces the per-task accounting.

        With ``load`` (F15-F17) nothing is published: ``before`` starts the web server and the
        relays (before the workers, so that they all start together), the load runs in a thread
        of its own alongside the fault, and the variant has drained when the load is done and
        the outbox, the queues and ``unacked`` are empty."""
        label = f"{scenario}-{variant}"
        self.reset()
        run_env = {"CHAOS_CONTROL": control, **(env or {})}
        run = Run(self, run_env, self.concurrency, label)
        row = Row(scenario=scenario, variant=variant, fault=fault_name, control=control or "-", expect=expect)
        started = time.monotonic()
        thread: threading.Thread | None = None
        loader: threading.Thread | None = None
        try:
            if load is not None and before is not None:
                before(run)
            for _ in range(workers):
                run.new_worker()
            if load is not None:
                run.wait_frontdoor()
                loader = threading.Thread(target=self._load, args=(load, run), name=f"load-{label}", daemon=True)
                loader.start()
                run.log("load started")
            else:
                if before is not None:
                    before(run)
                self.publish(specs)
                run.log(f"published {len(specs)} tasks")
            if fault is not None:
                thread = threading.Thread(target=self._fault, args=(fault, run), name=f"fault-{label}", daemon=True)
                thread.start()
            # The fault repeats until the backlog is gone; then it is told to stop.
            while time.monotonic() - started < timeout:
                if thread is None or not thread.is_alive():
                    break
                if specs and self.backlog() == 0:
                    run.drained.set()
                if load is not None and run.load_done.is_set() and self.outbox() == 0 and self.backlog() == 0:
                    run.drained.set()
                time.sleep(0.5)
            run.drained.set()
            if thread is not None:
                thread.join(timeout=120)
            if loader is not None:
                loader.join(timeout=max(30.0, timeout - (time.monotonic() - started)))
                run.stop_webs()  # no more requests: the web server's CPU goes to the drain
            self.ensure_services()
            if not any(w.alive for w in run.workers):
                run.new_worker()
            quiet = self.wait_quiet(run, timeout=max(30.0, timeout - (time.monotonic() - started)))
            # F15-F17 write no dead letters: with nothing reconciled, the first wait stands.
            if self.reconcile(run) or load is None:
                quiet = self.wait_quiet(run, timeout=30, stable_for=3) and quiet
            row.timed_out = not quiet
            if after is not None:
                after(run)
            if account is not None:
                account(run, row)
            else:
                self.account(specs, row)
            for column, keys in row.examples.items():
                run.log(f"{column}: {', '.join(keys)}")
        finally:
            run.drained.set()
            run.stop_beats()
            run.stop_webs()
            run.stop_relays()
            for worker in run.workers:
                worker.stop()
            self.ensure_services()
        row.seconds = round(time.monotonic() - started, 1)
        if row.timed_out:
            row.notes = "; ".join([*filter(None, [row.notes]), *run.events[-3:]])
        return row

    @staticmethod
    def _load(load: Callable[[Run], LoadResult], run: Run) -> None:
        try:
            run.load_result = load(run)
            result = run.load_result
            run.log(f"load done: {result.sent} sent, {len(result.ok)} 2xx, non-2xx {dict(result.statuses)}, "
                    f"errors {dict(result.errors)}, {result.seconds}s")
        except Exception as exc:  # reported in the row (the load sent fewer requests than keys)
            run.log(f"load raised {exc!r}")
        finally:
            run.load_done.set()

    @staticmethod
    def _fault(fault: Callable[[Run], None], run: Run) -> None:
        try:
            fault(run)
        except Exception as exc:  # a fault that breaks must not hang the run; it is reported
            run.log(f"fault raised {exc!r}")


def task_mix(prefix: str, n: int, seed: Any, *, crash: float = 0.02, fail: float = 0.13, retry: float = 0.2,
             not_idempotent: float = 0.2) -> list[TaskSpec]:
    """``n`` seeded tasks: ok, retried, non-retryable and crashing ones; some not idempotent."""
    rng = random.Random(f"{seed}-{prefix}")
    specs = []
    for i in range(n):
        r = rng.random()
        key = f"{prefix}-{i:05d}"
        idempotent = rng.random() >= not_idempotent
        if r < crash:
            specs.append(TaskSpec(key, "crash", idempotent))
        elif r < crash + fail:
            specs.append(TaskSpec(key, "fail", idempotent))
        elif r < crash + fail + retry:
            specs.append(TaskSpec(key, "retry", idempotent, param=rng.choice([1, 2])))
        else:
            specs.append(TaskSpec(key, "ok", idempotent))
    return specs


@contextmanager
def harness(workdir: Path, **kwargs: Any) -> Iterator[Harness]:
    h = Harness(workdir, **kwargs)
    try:
        yield h
    finally:
        h.close()


def dump(rows: list[Row], path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2))
