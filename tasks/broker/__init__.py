"""Everything that talks to the broker below Celery's own API: kombu's Redis transport with
an atomic fetch (``transport``), the batched publish path (``publish``, over messages built as
``send_task`` builds them: ``message``) and the one reader of queue depths (``depth``)."""
