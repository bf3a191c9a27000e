"""F1-F13: faults on the workers, Redis and Postgres while published tasks run, and the variants
of the scenarios whose control is not simply "the same fault with one protection off"
(``fault_and_control`` in ``tests/chaos/scenarios.py``).

A fault is a function of the ``Run``; it repeats until the backlog is gone (``run.sleep``
returns False) and signals only processes the harness started.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from tests.chaos.run import Run, Variant
from tests.chaos.services import redis_client, sql


def kill_children(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        delay = 1.0  # the first fault lands early, before a small backlog is gone
        while run.sleep(delay):
            delay = every
            children = run.worker.children()
            if children:
                # Prefer a process that is running a chaos task right now (the task records
                # its pid): killing an idle one proves nothing, and the control would miss.
                # Imported here: the chaos tasks need Django set up, which the harness does
                # after this module is imported.
                from tests.chaos.tasks import BUSY_KEY

                busy = {int(p) for p in redis_client(run.rd).smembers(BUSY_KEY)} & set(children)
                pid = run.rng.choice(sorted(busy) or children)
                os.kill(pid, signal.SIGKILL)  # a pool process of a worker we started
                run.log(f"SIGKILL pool process {pid}")
    return fault


def kill_worker(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        delay = 2.0
        while run.sleep(delay):
            delay = every
            run.worker.kill_all()
            run.log("SIGKILL the whole worker; restarting it")
            run.new_worker()
    return fault


def shutdowns(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        cold, delay = False, 2.0
        while run.sleep(delay):
            delay = every
            sig = signal.SIGQUIT if cold else signal.SIGTERM
            run.log(f"{'cold (SIGQUIT)' if cold else 'warm (SIGTERM)'} shutdown")
            run.worker.signal_main(sig)
            if not run.worker.wait_exit(60):
                run.log("worker did not exit in 60 s; SIGKILL")
            run.worker.stop()
            run.new_worker()
            cold = not cold
    return fault


def restart_redis(*, appendonly: bool, sig: int, fsync: str = "everysec", times: int = 2,
                  every: float = 4.0, down: float = 1.0) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for _ in range(times):
            if not run.sleep(every):
                return
            run.log(f"Redis {signal.Signals(sig).name} (appendonly={appendonly}, fsync={fsync}), down {down}s")
            run.harness.restart_redis(appendonly=appendonly, sig=sig, down=down, fsync=fsync)
    return fault


def no_persistence(run: Run) -> None:
    redis_client(run.rd).config_set("appendonly", "no")
    run.harness.rd.appendonly = False


def aof_always(run: Run) -> None:
    redis_client(run.rd).config_set("appendfsync", "always")


def postgres_down(seconds: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        if not run.sleep(2):
            return
        run.log(f"Postgres stopped for {seconds}s")
        run.pg.stop()
        time.sleep(seconds)
        run.pg.start()
        run.log("Postgres back")
    return fault


def terminate_connections(every: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        delay = 1.0
        while run.sleep(delay):
            delay = every
            try:
                killed = sql(run.pg, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", run.pg.database)
                run.log(f"terminated {killed[0][0]} Postgres connections")
            except Exception as exc:
                run.log(f"terminate failed: {exc!r}")
    return fault


def freeze_redis(seconds: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        if not run.sleep(2):
            return
        assert run.rd.proc is not None
        run.log(f"Redis SIGSTOP for {seconds}s")
        os.kill(run.rd.proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(run.rd.proc.pid, signal.SIGCONT)
        run.log("Redis SIGCONT")
    return fault


def broker_down_during_retries(times: int, down: float) -> Callable[[Run], None]:
    def fault(run: Run) -> None:
        for _ in range(times):
            if not run.sleep(2.5):
                return
            run.log(f"Redis down {down}s while retries are republished")
            assert run.rd.proc is not None
            run.rd.stop()
            time.sleep(down)
            run.harness.start_redis()
    return fault


def wait_only(seconds: float) -> Callable[[Run], None]:
    """No injected signal: the fault is in the messages (F9/F10); keep the run open."""
    def fault(run: Run) -> None:
        run.sleep(seconds)
    return fault


def f4(reduced: bool) -> list[Variant]:
    return [
        Variant("fault", "", "pass", restart_redis(appendonly=True, sig=signal.SIGTERM)),
        Variant("control", "no-persistence", "detect", restart_redis(appendonly=False, sig=signal.SIGTERM, times=1),
                before=no_persistence, note="Redis restarted without AOF"),
    ]


def f5(reduced: bool) -> list[Variant]:
    return [
        Variant("no-persistence", "", "broker_loss", restart_redis(appendonly=False, sig=signal.SIGKILL, times=1),
                before=no_persistence, note="what the broker itself loses"),
        Variant("aof-always", "", "pass", restart_redis(appendonly=True, sig=signal.SIGKILL, fsync="always", times=1),
                before=aof_always, note="same kill with appendfsync always"),
    ]


def f6(reduced: bool) -> list[Variant]:
    down = 10.0 if reduced else 30.0
    return [
        Variant("fault", "", "pass", postgres_down(down)),
        Variant("control", "no_spool", "detect", postgres_down(down)),
    ]


def f8(reduced: bool) -> list[Variant]:
    seconds = 20.0 if reduced else 60.0
    return [Variant("fault", "", "pass", freeze_redis(seconds)), Variant("control", "no_capture", "detect",
                                                                          freeze_redis(seconds))]
