"""Capture and requeue on Redis (always) and RabbitMQ (quorum queues, when one is reachable),
and three workers with their own hostnames and queues."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from typing import Any

import pytest

from dlq.models import DeadLetter, DeadLetterStatus
from tests.workers import CELERY, ROOT, RelayProcess, Worker, database_url, wait_for

pytestmark = pytest.mark.worker
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_reachable() -> bool:
    host, port = "127.0.0.1", 5672
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError:
        return False
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


BROKERS = [
    pytest.param("redis", id="redis"),
    pytest.param("amqp", id="rabbitmq", marks=pytest.mark.skipif(not rabbitmq_reachable(), reason="no RabbitMQ reachable")),
]


@pytest.mark.parametrize("broker", BROKERS)
def test_capture_and_requeue_on_each_broker(broker: str, transactional_db: Any) -> None:
    queue = f"tp-{uuid.uuid4().hex[:8]}"
    env = {"CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"] if broker == "redis" else RABBITMQ_URL,
           "CELERY_QUORUM_QUEUES": f"celery,{queue}", "DATABASE_URL": database_url()}
    worker = Worker(queues=queue, env=env).start(timeout=90) if broker == "redis" else _start_amqp_worker(queue, env)
    relay = RelayProcess(env=env, name=f"relay-{broker}").start()  # publishes enqueue()'s outbox rows to this broker
    try:
        result = subprocess.run([sys.executable, "-m", "tests.brokers.scenario", queue], cwd=ROOT, capture_output=True,
                                text=True, timeout=300, env={**os.environ, **env})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        relay.stop()
        worker.stop()
    assert out["broker"] == broker
    assert out["captured"] == {"reason": "non_retryable", "queue": queue, "attempts": 1}
    assert out["requeued"] == {"status": "resolved", "result": "0.25"}
    assert out["retry_then_success"] == "2"
    assert out["exhausted"] == {"reason": "max_retries_exceeded", "attempts": [1, 2, 3, 4]}
    assert out["dead_letters"] == 2
    if broker == "amqp":
        assert _queue_type(queue) == "quorum"
        from kombu import Connection

        with Connection(RABBITMQ_URL) as conn:
            conn.channel().queue_delete(queue)


def _start_amqp_worker(queue: str, env: dict[str, str]) -> Worker:
    """A worker on RabbitMQ; ready when it answers a ping over that broker."""
    import subprocess as sp

    worker = Worker(queues=queue, env=env)
    worker.log_path.parent.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    cmd = [CELERY, "-A", "taskplatform", "worker", "-P", "prefork", "-c", "2", "-l", "info", "-n", worker.name, "-Q", queue,
           "--without-mingle", "--without-gossip"]
    log = open(worker.log_path, "ab")
    worker.proc = sp.Popen(cmd, cwd=ROOT, env=full, stdout=log, stderr=sp.STDOUT, start_new_session=True)
    log.close()
    ping = [CELERY, "-A", "taskplatform", "inspect", "ping", "-d", worker.name, "-t", "1"]
    wait_for(lambda: sp.run(ping, cwd=ROOT, env=full, capture_output=True).returncode == 0 or worker.proc.poll() is not None,
             timeout=90, interval=1, message="the RabbitMQ worker")
    assert worker.proc.poll() is None, worker.log()[-3000:]
    return worker


def _queue_type(queue: str) -> str:
    from kombu import Connection

    with Connection(RABBITMQ_URL) as conn:
        channel = conn.channel()
        # A passive declare with other arguments fails if the queue is not a quorum queue.
        try:
            channel.queue_declare(queue=queue, passive=False, durable=True, auto_delete=False,
                                  arguments={"x-queue-type": "quorum", "x-delivery-limit": 20})
            return "quorum"
        except Exception as exc:
            return f"not quorum: {exc}"


def test_three_workers_route_capture_and_requeue_by_queue(transactional_db: Any, settings: Any) -> None:
    from django_celery_results.models import TaskResult

    from demo.tasks import add, divide
    from dlq import services

    suffix = uuid.uuid4().hex[:6]
    queues = {"default": f"main-{suffix}", "billing": f"billing-{suffix}", "reports": f"reports-{suffix}"}
    settings.TASK_QUEUES = [*settings.TASK_QUEUES, *queues.values()]  # an operator may move a requeue between them
    workers = {name: Worker(queues=q, name=f"{name}-{suffix}@host-{name}", concurrency=1).start() for name, q in queues.items()}
    try:
        ran = add.apply_async([1, 1], queue=queues["reports"])
        assert ran.get(timeout=30) == 2
        assert TaskResult.objects.get(task_id=ran.id).worker == workers["reports"].name

        died = divide.apply_async([6, 0], queue=queues["billing"])
        row = wait_for(lambda: DeadLetter.objects.filter(task_id=died.id).first(), message="captured on billing")
        assert row.queue == queues["billing"] and row.attempts[0]["worker"] == workers["billing"].name
        row = services.dead_letter_update(dead_letter_id=row.pk, actor="ops", reason="fix", version=row.version, args=[6, 3])

        first = services.dead_letter_requeue(dead_letter_id=row.pk, actor="ops", reason="original queue")
        wait_for(lambda: DeadLetter.objects.filter(pk=row.pk, status=DeadLetterStatus.RESOLVED).exists(), message="resolved")
        assert TaskResult.objects.get(task_id=first).worker == workers["billing"].name

        again = divide.apply_async([8, 0], queue=queues["billing"])
        row2 = wait_for(lambda: DeadLetter.objects.filter(task_id=again.id).first(), message="second capture")
        row2 = services.dead_letter_update(dead_letter_id=row2.pk, actor="ops", reason="fix", version=row2.version, args=[8, 2])
        moved = services.dead_letter_requeue(dead_letter_id=row2.pk, actor="ops", reason="run elsewhere", queue=queues["reports"])
        wait_for(lambda: DeadLetter.objects.filter(pk=row2.pk, status=DeadLetterStatus.RESOLVED).exists(), message="resolved")
        assert TaskResult.objects.get(task_id=moved).worker == workers["reports"].name
    finally:
        for w in workers.values():
            w.stop()
