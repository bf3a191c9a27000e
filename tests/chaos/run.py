"""One scenario variant: its definition (``Variant``) and what its fault may touch while it
runs (``Run``: the workers, beats, web servers and relays it started, the services, its log).
"""
from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.chaos.accounting import Row
from tests.chaos.load import LoadResult
from tests.chaos.processes import ChaosBeat, ChaosRelay, ChaosWeb, ChaosWorker

if TYPE_CHECKING:
    from tests.chaos.harness import Harness


@dataclass
class Variant:
    name: str
    control: str
    expect: str
    fault: Callable[[Run], None] | None
    before: Callable[[Run], None] | None = None
    note: str = ""
    after: Callable[[Run], None] | None = None
    #: Replaces the per-task accounting (F14 counts beat ticks, not published tasks).
    account: Callable[[Run, Row], None] | None = None
    #: F15-F17: the HTTP load (``load(run, n)``) that replaces publishing ``n`` tasks.
    load: Callable[[Run, int], LoadResult] | None = None


class Run:
    """One scenario variant: what a fault function may touch."""

    def __init__(self, harness: Harness, env: dict[str, str], concurrency: int, label: str) -> None:
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
