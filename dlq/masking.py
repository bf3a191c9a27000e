"""Secrets in task arguments: masked wherever a value leaves the database.

A secret is the value of a secret-looking key (``password``, ``token``, ``secret``,
``api_key``, ``authorization``, ``credential``, ``private_key``, ...) anywhere in the
arguments or headers. What is done with them:

- **stored scrubbed**: the exception message, the traceback and the attempts' messages are
  written with every secret value of the task's arguments replaced (``scrub``) and every
  ``key=value`` that looks secret masked (``mask_text``): nothing needs them back, and the
  search index, the alerts and the fingerprints are built from them;
- **stored as sent, shown masked**: the arguments (a requeue sends them), the headers, the raw
  body of an undecodable message and ``raw_arguments``: ``masked_dead_letter`` is the one view
  of a dead letter that the API, the pages, the admin, the exports and the CLI show;
- **searched masked**: the full-text vector is built from masked arguments (``search_text``),
  so a viewer cannot confirm a guessed secret by searching for it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # dlq.models builds its search vector with this module
    from dlq.models import DeadLetter

MASK = "********"
SECRET_KEY_PATTERN = re.compile(r"pass(word|wd)?|token|secret|api[_-]?key|authorization|credential|private[_-]?key", re.I)
#: Shorter values are not scrubbed from text (a 2-character "secret" would mask half a traceback).
MIN_SCRUB_LENGTH = 4
_KEY = r"[A-Za-z0-9_.\-]*(?:pass(?:word|wd)?|token|secret|api[_-]?key|authorization|credential|private[_-]?key)[A-Za-z0-9_.\-]*"
# key=value, key: value, 'key': 'value', "key": "value", Authorization: Bearer xyz
_SECRET_IN_TEXT = re.compile(
    r"(?P<key>(?P<q>[\"']?)" + _KEY + r"(?P=q)\s*[:=]\s*(?:(?:Bearer|Basic|Token)\s+)?)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,;)}\]&]+)", re.I)


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


def secret_values(*values: Any) -> list[str]:
    """Every value under a secret-looking key in ``values``, as text, longest first."""
    found: set[str] = set()
    stack: list[tuple[Any, bool]] = [(v, False) for v in values]
    while stack:
        item, secret = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, secret or is_secret_key(k)) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, secret) for v in item)
        elif secret and item is not None and not isinstance(item, bool):
            text = str(item)
            if len(text) >= MIN_SCRUB_LENGTH:
                found.add(text)
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (as written, as ``repr`` and as JSON escape it) replaced,
    and every secret-looking ``key=value`` masked."""
    for secret in secrets:
        for form in {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}:
            if form and form in text:
                text = text.replace(form, MASK)
    return mask_text(text)


def mask_text(text: str) -> str:
    """Free text (a message, a traceback, a raw body) with the value of every secret-looking
    ``key=value`` / ``"key": "value"`` replaced by ``MASK``."""
    if not text:
        return text

    def replace(match: re.Match[str]) -> str:
        value = match.group("value")
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{match.group('key')}{quote}{MASK}{quote}"

    return _SECRET_IN_TEXT.sub(replace, text)


def mask_json_text(text: str | None) -> str | None:
    """A JSON document (a raw message body, ``raw_arguments``) with its secrets masked: parsed
    and masked when it parses, else masked as free text."""
    if text is None:
        return None
    try:
        return json.dumps(mask(json.loads(text)))
    except (ValueError, RecursionError):
        return mask_text(text)


@dataclass(frozen=True)
class MaskedDeadLetter:
    """What of a dead letter may leave the database: the one view every shell shows."""

    args: Any
    kwargs: Any
    headers: Any
    options: Any
    exception_message: str
    traceback: str
    attempts: list[Any]
    raw_body: str | None
    raw_arguments: str | None


def masked_dead_letter(row: DeadLetter) -> MaskedDeadLetter:
    """The masked view of ``row``; fields deferred in its query are left out (``None`` or empty)."""
    deferred = row.get_deferred_fields() if hasattr(row, "get_deferred_fields") else set()

    def field(name: str, default: Any = None) -> Any:
        return default if name in deferred else getattr(row, name)

    return MaskedDeadLetter(
        args=mask(field("args")), kwargs=mask(field("kwargs")), headers=mask(field("headers", {})),
        options=mask(field("options", {})), exception_message=mask_text(field("exception_message", "") or ""),
        traceback=mask_text(field("traceback", "") or ""),
        attempts=[{**a, "message": mask_text(str(a.get("message", "")))} if isinstance(a, dict) else a
                  for a in (field("attempts", []) or [])],
        raw_body=mask_json_text(field("raw_body")), raw_arguments=mask_json_text(field("raw_arguments")),
    )


def search_text(*, task_name: str, exception_type: str, exception_message: str, traceback: str, args: Any,
                kwargs: Any) -> str:
    """What the full-text index reads: masked arguments, bounded prefixes of each part."""
    return " ".join((task_name[:255], exception_type[:255], exception_message[:4096], traceback[:16384],
                     json.dumps(mask(args), default=str)[:16384], json.dumps(mask(kwargs), default=str)[:16384]))
