"""The chaos harness: our own Postgres, Redis and ``celery worker`` processes on free ports,
seeded tasks, one fault per run, quiescence, reconciliation, then one accounting row.

The harness process itself is configured (``tests/chaos/services.py``: ``configure()``)
*before* Django is imported: its settings point at the harness' services, never at the
developer's or the test suite's; ``taskplatform.celery`` is imported only once they are set.
Every process it signals is one it started (``tests/chaos/processes.py``).
"""
from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kombu import Producer

from tests.chaos.accounting import Row, account_tasks
from tests.chaos.load import LoadResult
from tests.chaos.mixes import TaskSpec
from tests.chaos.run import Run
from tests.chaos.services import QUEUE, QUEUE_LISTS, RESET, configure, redis_client, sql


class Harness:
    """The harness' services and one variant at a time on them (``run``)."""

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
                account_tasks(self.pg, specs, row)
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


@contextmanager
def harness(workdir: Path, **kwargs: Any) -> Iterator[Harness]:
    h = Harness(workdir, **kwargs)
    try:
        yield h
    finally:
        h.close()
