"""What production refuses to start with (read by the settings, before anything else runs).

Secure by default: without ``DJANGO_ENV=development`` the project runs as production, and
production refuses the development key, a short or placeholder ``SECRET_KEY`` (the
``change-me`` values of ``.env.example``, or anything Django's own deployment check would
flag: fewer than 50 characters or 5 distinct ones), ``DEBUG=true``, and placeholder or weak
credentials for what it exposes: the metrics token, Flower's password, and the passwords in
the database and broker URLs.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

PLACEHOLDERS = ("change-me", "changeme", "change_me", "placeholder", "example", "insecure", "password", "secret",
                "default", "admin", "demo")
MIN_SECRET_LENGTH = 12


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return not lowered or any(word in lowered for word in PLACEHOLDERS)


def check_secret_key(key: str) -> None:
    if is_placeholder(key) or len(key) < 50 or len(set(key)) < 5:
        raise ImproperlyConfigured(
            "production refuses this SECRET_KEY: it is a placeholder or weak (use 50+ random characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))')")


def check_credential(name: str, value: str, *, required: bool = False) -> None:
    """A token or password production exposes: refused when it is a placeholder or short."""
    if not value:
        if required:
            raise ImproperlyConfigured(f"production needs {name}")
        return
    if is_placeholder(value) or len(value) < MIN_SECRET_LENGTH:
        raise ImproperlyConfigured(f"production refuses {name}: a placeholder or shorter than {MIN_SECRET_LENGTH} "
                                   "characters; set a random one")


def check_basic_auth(name: str, value: str) -> None:
    """``user:password`` pairs (comma-separated, as Flower takes them)."""
    for pair in filter(None, (p.strip() for p in value.split(","))):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ImproperlyConfigured(f"{name} must be user:password")
        check_credential(f"the password in {name}", password)


def check_url_password(name: str, url: str) -> None:
    password = urlsplit(url).password
    if password is not None:
        check_credential(f"the password in {name}", password)
