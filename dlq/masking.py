"""Masking of secrets in task arguments wherever they are shown or exported."""
from __future__ import annotations

import re
from typing import Any

MASK = "********"
SECRET_KEY_PATTERN = re.compile(r"pass(word|wd)?|token|secret|api[_-]?key|authorization|credential|private[_-]?key", re.I)


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(SECRET_KEY_PATTERN.search(key))


def mask(value: Any) -> Any:
    """A copy of ``value`` with the value of every secret-looking key replaced by ``MASK``."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_key(k) and v is not None else mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def unmask(new: Any, old: Any) -> Any:
    """``new`` with every ``MASK`` under a secret key replaced by the value ``old`` had there,
    so an edit that sends the mask back keeps the secret."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {
            k: (old[k] if v == MASK and is_secret_key(k) and k in old else unmask(v, old.get(k)))
            for k, v in new.items()
        }
    if isinstance(new, list) and isinstance(old, list):
        return [unmask(v, old[i]) if i < len(old) else v for i, v in enumerate(new)]
    return new
