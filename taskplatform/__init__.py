"""The Django project. Named ``taskplatform`` because a package called ``platform``
would shadow the standard library module that Celery imports."""
from taskplatform.celery import app as celery_app

__all__ = ("celery_app",)
