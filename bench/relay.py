"""``python -m bench.relay [outbox_relay options]``: the real ``manage.py outbox_relay`` command,
with the bench tasks registered in the process.

A relay builds each message with its task's own options, as ``apply_async`` would, when the
task is registered in its process (``outbox_relay`` imports the apps' task modules; the bench
tasks are not in an app). This is the relay's equivalent of the bench workers' ``-I
bench.tasks``; everything else is the command as ``./dev up`` and docker-compose run it.

The relay stops itself (SIGTERM, so it finishes its batch) when the bench that started it is
gone, so a bench killed with SIGKILL leaves no relay behind.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time


def _stop_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), name="orphan-watch", daemon=True).start()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskplatform.settings")
    import django

    django.setup()
    import bench.tasks  # noqa: F401  (registers the bench tasks)
    from django.core.management import call_command

    call_command("outbox_relay", *(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
