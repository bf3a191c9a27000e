"""gunicorn settings for the web container (`gunicorn -c gunicorn.conf.py taskplatform.wsgi`)."""
import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))  # exports stream; long requests are fine
graceful_timeout = 30
keepalive = 5
max_requests = 2000  # recycle workers: bounded memory growth
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
# X-Forwarded-Proto (https) is believed only from these proxies: a client connecting directly
# cannot claim https. Set TRUSTED_PROXY_IPS to your TLS proxy's address(es), comma-separated.
forwarded_allow_ips = os.environ.get("TRUSTED_PROXY_IPS", "127.0.0.1")
