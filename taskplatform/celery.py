"""The Celery application. Configuration comes from Django settings (``CELERY_*``)."""
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from taskplatform.logfilters import mask_handlers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskplatform.settings")

app = Celery("taskplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["tasks", "dlq"])

# A worker that sets up its own logging (the default, plain logs) masks secrets like Django's does.
after_setup_logger.connect(mask_handlers, weak=False)
after_setup_task_logger.connect(mask_handlers, weak=False)
