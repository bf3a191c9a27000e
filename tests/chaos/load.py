"""The HTTP load of the front-door scenarios (F15-F17): ``POST /chaos/order`` once per key from a
pool of client threads, optionally at a steady rate, with a client timeout. It records which
keys got a 2xx, the other answers and the connection errors (``LoadResult``), which the
front door's accounting reads (``tests/chaos/frontdoor.py``: ``account_orders``).
"""
from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlencode

#: The chaos view (``tests/chaos/web.py``).
PATH = "/chaos/order"


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
        except TimeoutError:
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
