"""Settings of the chaos web server only (F15-F17): the product's settings with the chaos
URLconf, which serves nothing but the chaos view (``tests/chaos/web.py``). The product never
loads this module; the harness selects it (``DJANGO_SETTINGS_MODULE``) for the gunicorn it
starts, and nowhere else.
"""
from taskplatform.settings import *  # noqa: F403

ROOT_URLCONF = "tests.chaos.urls"
# No debug pages: a 500 is a short answer, and no query log grows in the workers.
DEBUG = False
# Plain HTTP on 127.0.0.1: never redirected to https, whatever DJANGO_ENV says.
SECURE_SSL_REDIRECT = False
