"""A logging filter every handler gets: log lines leave the process with secret-looking
``key=value`` pairs masked (``dlq.masking.mask_text``), whoever wrote them (Celery logs an
exception's message when a task fails)."""
from __future__ import annotations

import logging

from dlq.masking import mask_text


class MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it to the formatter
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatted here (the formatter then uses it as it is), so a traceback is masked too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def mask_handlers(logger: logging.Logger | None = None, **kwargs: object) -> None:
    """Celery's own logging set-up (a worker's handlers): the same filter on each handler."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, MaskSecrets) for f in handler.filters):
            handler.addFilter(MaskSecrets())
