"""Django settings. Every value comes from an environment variable with a safe local default.

When ``DATABASE_URL`` / ``CELERY_BROKER_URL`` / ``REDIS_URL`` are not set, the URLs of the
embedded services that ``./dev up`` started are read from ``.data/services.json``, so that
``.venv/bin/python manage.py ...`` and ``celery -A taskplatform ...`` find them by themselves.
"""
from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from devtools.embedded import discovered_urls
from taskplatform import secure

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


_embedded = discovered_urls(BASE_DIR)
# Secure by default: development (DEBUG, the demo tasks and page, the insecure default key)
# only when asked for with DJANGO_ENV=development, which ./dev sets (and records in
# .data/services.json, so that `.venv/bin/python manage.py ...` beside a running ./dev up
# finds it too). Anything else runs as production and refuses weak settings (secure.py).
# (The recorded DJANGO_ENV applies only to a process that also takes its database from there.)
_discovered_env = _embedded.get("django_env") if not os.environ.get("DATABASE_URL") else None
DJANGO_ENV = (os.environ.get("DJANGO_ENV") or _discovered_env or "production").strip().lower()
if DJANGO_ENV not in ("development", "production"):
    raise ImproperlyConfigured(f"DJANGO_ENV must be development or production, not {DJANGO_ENV!r}")
DEVELOPMENT = DJANGO_ENV == "development"
PRODUCTION = not DEVELOPMENT

INSECURE_DEFAULT_SECRET_KEY = "django-insecure-local-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", INSECURE_DEFAULT_SECRET_KEY if DEVELOPMENT else "")
DEBUG = env_bool("DEBUG", default=DEVELOPMENT)
if PRODUCTION:
    if not SECRET_KEY or SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY:
        raise ImproperlyConfigured("production refuses to start without SECRET_KEY (DJANGO_ENV=development for "
                                   "the development defaults).")
    secure.check_secret_key(SECRET_KEY)
    if DEBUG:
        raise ImproperlyConfigured("production refuses DEBUG=true (DEBUG only with DJANGO_ENV=development).")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by us (no CDN)
    "django_celery_results",
    "django_celery_beat",
    "dlq",
    "tasks",
    "dashboard",
]
if DEVELOPMENT:
    # The demo and example tasks, the /demo/ page and seed_demo: development only.
    INSTALLED_APPS.append("demo")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "taskplatform.middleware.StatementTimeoutMiddleware",
    # Last, as django-axes asks: counts failed logins and locks out (429) after AXES_FAILURE_LIMIT.
    "axes.middleware.AxesMiddleware",
]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Login throttling and lockout (django-axes): a username from one address is locked out for
# AXES_COOLOFF_MINUTES after AXES_FAILURE_LIMIT wrong passwords in a row (the admin's and the
# dashboard's login alike); a success resets the count. `manage.py axes_reset` lifts it.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# Every SQL statement of a web request stops after this long (taskplatform/middleware.py).
WEB_STATEMENT_TIMEOUT_MS = env_int("WEB_STATEMENT_TIMEOUT_MS", 10_000)

ROOT_URLCONF = "taskplatform.urls"
WSGI_APPLICATION = "taskplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "taskplatform.context_processors.platform",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or _embedded.get(
    "database_url", "postgres://postgres@127.0.0.1:5432/taskplatform"
)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT_OVERRIDE") or BASE_DIR / "staticfiles")
if DEBUG:
    # In development WhiteNoise serves from the apps (finders); no collectstatic needed.
    warnings.filterwarnings("ignore", message="No directory at")
# Static files are served by WhiteNoise (compressed, cache-busting names) in production,
# so no separate file server is needed; `./dev up` (DEBUG) serves them from the apps.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

# --- Security (production values; `manage.py check --deploy` is clean with DJANGO_ENV=production) ---
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
# No SECURE_PROXY_SSL_HEADER: Django would believe X-Forwarded-Proto from any client. gunicorn
# sets the scheme from it only for the proxies in TRUSTED_PROXY_IPS (gunicorn.conf.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- REST framework ---
# API tokens (django-rest-knox, our model dlq.ApiToken): stored as digests, expiring.
KNOX_TOKEN_MODEL = "dlq.ApiToken"
# knox's own migrations would create its default token table (ours replaces it): none.
MIGRATION_MODULES = {"knox": None}
API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 90)
REST_KNOX = {"TOKEN_TTL": timedelta(days=API_TOKEN_TTL_DAYS), "AUTH_HEADER_PREFIX": "Token"}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes a missing/wrong credential a 401.
        "dashboard.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Expensive reads have a scope of their own (per user, counted in Redis so that every
    # web process shares the count); everything else the user rate.
    "DEFAULT_THROTTLE_CLASSES": ["dashboard.api.throttling.UserThrottle",
                                 "dashboard.api.throttling.ScopedThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("API_THROTTLE_USER", "1200/min"),
        "expensive": os.environ.get("API_THROTTLE_EXPENSIVE", "60/min"),
        "export": os.environ.get("API_THROTTLE_EXPORT", "10/min"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["dashboard.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "dashboard.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # `?format=csv|json` belongs to the export endpoint, not to DRF's content negotiation.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Task platform API",
    "DESCRIPTION": "Dead letters: search, triage, edit, requeue; bulk redrive jobs; task enqueueing.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "DeadLetterStatusEnum": "dlq.models.DeadLetterStatus",
        "RedriveJobStatusEnum": "dlq.models.RedriveJobStatus",
        "DeathReasonEnum": "dlq.models.DeathReason",
    },
}
# Request bodies above this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)

# --- Celery (see docs/reference.md "Celery policy") ---
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _embedded.get(
    "broker_url", "redis://127.0.0.1:6379/0"
)
REDIS_URL = os.environ.get("REDIS_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else _embedded.get("redis_url", "redis://127.0.0.1:6379/0")
)
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 2 * 60 * 60)
# Shared by every process (API throttle counts): Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                      "KEY_PREFIX": "cache", "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2}}}
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# Redis only: how often a worker looks for unacked messages past their visibility timeout
# (kombu's sweep runs every unacked_restore_interval x unacked_restore_throttle = ~100 s by
# default). Set it to restore sooner; the chaos harness uses 2 s with its 20 s timeout.
CELERY_UNACKED_RESTORE_SECONDS = env_int("CELERY_UNACKED_RESTORE_SECONDS", 0)
if CELERY_UNACKED_RESTORE_SECONDS:
    CELERY_BROKER_TRANSPORT_OPTIONS.update(unacked_restore_interval=CELERY_UNACKED_RESTORE_SECONDS,
                                           unacked_restore_throttle=1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The queues operators and API clients may name (enqueue, requeue, edit, bulk): see
# tasks/queues.py. On RabbitMQ they are declared as quorum queues. CELERY_QUORUM_QUEUES is the
# older name of the same list.
TASK_QUEUES = env_list("TASK_QUEUES", os.environ.get("CELERY_QUORUM_QUEUES", "celery"))
# Redis only: fetch with kombu's Redis transport plus an atomic move into ``unacked``, so that a
# worker killed between fetch and ack bookkeeping loses nothing (tasks/broker/transport.py).
CELERY_REDIS_ATOMIC_FETCH = env_bool("CELERY_REDIS_ATOMIC_FETCH", True)
if CELERY_REDIS_ATOMIC_FETCH and CELERY_BROKER_URL.startswith("redis://"):
    CELERY_BROKER_TRANSPORT = "tasks.broker.transport:Transport"
if CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
    # RabbitMQ: quorum queues (replicated, and they count deliveries), publisher confirms,
    # and a delivery limit as the broker's own backstop against a poison message. The limit
    # is above our poison-pill cap, so the dead letter is recorded before RabbitMQ drops it.
    DLQ_RABBITMQ_DELIVERY_LIMIT = env_int("DLQ_RABBITMQ_DELIVERY_LIMIT", 20)
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    CELERY_TASK_QUEUES = [
        Queue(name, routing_key=name, queue_arguments={"x-queue-type": "quorum",
                                                       "x-delivery-limit": DLQ_RABBITMQ_DELIVERY_LIMIT})
        for name in TASK_QUEUES
    ]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("TASK_DEFAULT_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("TASK_DEFAULT_TIME_LIMIT", 330)
# django-celery-results' backend, made unable to break the failure path (see dlq/backend.py).
CELERY_RESULT_BACKEND = "dlq.backend:ResilientDatabaseBackend"
# Celery's Django fixup closes every database connection before and after each task unless
# `CELERY_DB_REUSE_MAX` is set (celery#9824), and then still closes them unconditionally every
# N tasks: each task paid a new connection (~4 ms) and a cold first statement. With this set
# to "never", dlq/signals.py recycles connections at task boundaries the way Django does per
# request (CONN_MAX_AGE, CONN_HEALTH_CHECKS, unusable or left in a transaction: closed), so
# DB_CONN_MAX_AGE=0 still means one connection per task.
CELERY_DB_REUSE_MAX = 2**62
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = False
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
# One leader among beat processes, duplicate ticks recognised (see dlq/beat.py).
CELERY_BEAT_SCHEDULER = "dlq.beat:LeaderDatabaseScheduler"
CELERY_BEAT_SYNC_EVERY = 1  # persist last_run_at after every send, for a clean takeover
DLQ_BEAT_LOCK_TTL = env_int("DLQ_BEAT_LOCK_TTL", 30)
# Captures undecodable and unknown messages before Celery drops them (see dlq/consumer.py).
CELERY_WORKER_CONSUMER = "dlq.consumer:CapturingConsumer"
# Schedules live in the database (django-celery-beat), seeded by dlq/services/schedules.py.
# The failure hook: the task runtime (tasks/) hands a task's death and a requeued run's success
# to these callables (the domain's dead-letter capture, spooled while Postgres is down).
TASK_FAILURE_HANDLER = "dlq.spool.capture_or_spool"
TASK_REQUEUED_SUCCESS_HANDLER = "dlq.spool.resolve_or_spool"

TASK_DEFAULT_MAX_RETRIES = env_int("TASK_DEFAULT_MAX_RETRIES", 5)
# Backpressure (tasks/backpressure.py): queue=N,... overrides the default mark; 0 = off.
QUEUE_HIGH_WATER_MARK = env_int("QUEUE_HIGH_WATER_MARK", 10_000)
QUEUE_HIGH_WATER_MARKS = {
    name.strip(): int(mark) for name, _, mark in
    (item.partition("=") for item in env_list("QUEUE_HIGH_WATER_MARKS", "")) if mark.strip().isdigit()
}
# The outbox relay (tasks/relay.py, `manage.py outbox_relay`): rows per batch, how often it
# looks without a notification, the longest wait while the broker is down, its heartbeat file
# (`outbox_relay --check`), and the age of the oldest waiting row that opens an alert.
OUTBOX_RELAY_BATCH_SIZE = env_int("OUTBOX_RELAY_BATCH_SIZE", 1000)
OUTBOX_RELAY_POLL_SECONDS = float(env_int("OUTBOX_RELAY_POLL_MS", 1000)) / 1000
OUTBOX_RELAY_BACKOFF_MAX = float(env_int("OUTBOX_RELAY_BACKOFF_MAX", 30))
OUTBOX_RELAY_HEARTBEAT_FILE = os.environ.get("OUTBOX_RELAY_HEARTBEAT_FILE",
                                             str(BASE_DIR / ".data" / "outbox-relay.heartbeat"))
OUTBOX_ALERT_AGE_SECONDS = env_int("OUTBOX_ALERT_AGE_SECONDS", 120)
# How long an enqueue idempotency key holds (seconds).
IDEMPOTENCY_KEY_TTL = env_int("IDEMPOTENCY_KEY_TTL", 24 * 3600)
# Largest args+kwargs (as JSON) that the enqueue API and dead-letter edits accept.
TASK_MAX_ARGUMENTS_BYTES = env_int("TASK_MAX_ARGUMENTS_BYTES", 256 * 1024)
TASK_RETRY_BACKOFF = env_int("TASK_RETRY_BACKOFF", 2)
TASK_RETRY_BACKOFF_MAX = env_int("TASK_RETRY_BACKOFF_MAX", 600)

# --- Dead letter queue ---
DLQ_RETENTION_DAYS = env_int("DLQ_RETENTION_DAYS", 30)
DLQ_POISON_PILL_CAP = env_int("DLQ_POISON_PILL_CAP", 3)
DLQ_SPOOL_DIR = os.environ.get("DLQ_SPOOL_DIR", str(BASE_DIR / ".data" / "spool"))
DLQ_ALERT_THRESHOLD = env_int("DLQ_ALERT_THRESHOLD", 100)
DLQ_ALERT_WEBHOOK_URL = os.environ.get("DLQ_ALERT_WEBHOOK_URL", "")
DLQ_ALERT_GROWTH_THRESHOLD = env_int("DLQ_ALERT_GROWTH_THRESHOLD", 50)
DLQ_ALERT_GROWTH_WINDOW_MINUTES = env_int("DLQ_ALERT_GROWTH_WINDOW_MINUTES", 10)
DLQ_ALERT_NEW_GROUP_WINDOW_MINUTES = env_int("DLQ_ALERT_NEW_GROUP_WINDOW_MINUTES", 15)
DLQ_ALERT_EMAILS = env_list("DLQ_ALERT_EMAILS", "")
DLQ_STUCK_REQUEUE_MINUTES = env_int("DLQ_STUCK_REQUEUE_MINUTES", 30)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "taskplatform@localhost")
FLOWER_BASIC_AUTH = os.environ.get("FLOWER_BASIC_AUTH", "" if PRODUCTION else "demo:demo-password")
FLOWER_URL = os.environ.get("FLOWER_URL", "http://localhost:5555/")
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
if PRODUCTION:
    secure.check_credential("METRICS_TOKEN", METRICS_TOKEN)
    secure.check_basic_auth("FLOWER_BASIC_AUTH", FLOWER_BASIC_AUTH)
    for _name, _url in (("DATABASE_URL", DATABASE_URL), ("CELERY_BROKER_URL", CELERY_BROKER_URL), ("REDIS_URL", REDIS_URL)):
        secure.check_url_password(_name, _url)

# LOG_FORMAT=json: one JSON object per line with the `extra` fields (task_id, dead_letter_id, ...).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
# With JSON logs, workers log through Django's LOGGING too instead of Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "filters": {"mask_secrets": {"()": "taskplatform.logfilters.MaskSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "plain",
                             "filters": ["mask_secrets"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
