"""JSON values at the edges: what Postgres jsonb can store, and JSON text from people.

- ``jsonb_safe``: a value made storable (jsonb refuses NUL, lone surrogates, NaN, infinities);
- ``raw_text``: a value as JSON text a text column always takes;
- ``parse_json``: JSON text typed into a form or sent to the API, with the same limits
  everywhere (size, nesting depth, no NaN/Infinity, no NUL or lone surrogates), refused with
  ``ValidationFailed`` (400) and never a ``RecursionError``.
"""
from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings

from tasks.errors import ValidationFailed
from tasks.failures import clean_text, text_is_unsafe

#: Deepest nesting accepted from people (forms, API bodies).
MAX_DEPTH = 64
#: What raw_text keeps of a value JSON cannot write at all (its repr).
RAW_REPR_LIMIT = 262_144


def jsonb_safe(value: Any) -> Any:
    """``value`` made storable in Postgres jsonb, which refuses NUL, lone surrogates and
    non-finite numbers: such characters are kept as visible ``\\uXXXX`` text, NaN and the
    infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, rather than failing
    the write (``stored_arguments`` keeps the exact value beside such a copy).

    Walks the value once and copies only the containers on the way to a string that must
    change; anything else is returned as is (the same objects), so a clean 1 MB argument costs
    one scan and no copy. What ``json.dumps`` refuses is refused the same way (``TypeError``
    for a type JSON cannot hold, ``ValueError`` for a circular reference). A tuple that holds
    a string to fix comes back as a list (json stores both as an array); dict keys that are
    not strings (int, float, bool, None, which json accepts) are kept as they are.
    """
    return _jsonb_safe(value, set())


def _jsonb_safe(value: Any, path: set[int]) -> Any:
    if isinstance(value, str):
        return clean_text(value) if text_is_unsafe(value) else value
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (int, float)):  # bool is an int
        return value
    if isinstance(value, dict):
        _enter(value, path)
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            new_key: str | int | float | None
            if isinstance(key, str):
                new_key = clean_text(key) if text_is_unsafe(key) else key
            elif key is None or isinstance(key, (int, float)):
                new_key = key
            else:
                raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
            new_item = _jsonb_safe(item, path)
            if changed is None and (new_key is not key or new_item is not item):
                changed = {}
                for done_key, done_item in value.items():  # the clean entries before this one
                    if done_key is key:
                        break
                    changed[done_key] = done_item
            if changed is not None:
                changed[new_key] = new_item
        path.discard(id(value))
        return value if changed is None else changed
    if isinstance(value, (list, tuple)):
        _enter(value, path)
        items: list[Any] | None = None
        for index, item in enumerate(value):
            new_item = _jsonb_safe(item, path)
            if items is None and new_item is not item:
                items = list(value[:index])
            if items is not None:
                items.append(new_item)
        path.discard(id(value))
        return value if items is None else items
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _enter(container: Any, path: set[int]) -> None:
    if id(container) in path:
        raise ValueError("Circular reference detected")
    path.add(id(container))


def jsonb_exact(value: Any) -> bool:
    """True when jsonb gives ``value`` back as it is, once it is storable: jsonb keeps numbers as
    decimals, so a float written in exponent form with a positive exponent (``1e+16``) comes
    back as an integer, and ``-0.0`` as ``0.0``. (Object key order is not kept either; that
    carries no meaning in JSON or in keyword arguments.) Iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if "e+" in repr(item) or (item == 0.0 and math.copysign(1.0, item) < 0):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def all_finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (iterative: a deep value cannot exhaust the stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def raw_text(value: Any) -> str:
    """``value`` as JSON text that a Postgres text column always takes (``ensure_ascii``: NUL
    and lone surrogates escaped; NaN and the infinities as JavaScript writes them)."""
    try:
        return json.dumps(value)
    except (RecursionError, ValueError, TypeError):
        return json.dumps(repr(value)[:RAW_REPR_LIMIT])


def parse_json(text: str, *, max_bytes: int | None = None, max_depth: int = MAX_DEPTH, name: str = "body") -> Any:
    """JSON text from a person or a client, or ``ValidationFailed`` (code ``malformed_json``)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE if max_bytes is None else max_bytes
    if len(text) > limit:
        raise ValidationFailed(f"{name} is larger than {limit} bytes", code="malformed_json",
                               fields={name: ["too large"]})
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # json's decoder gives up on deep nesting before the stack does
        raise ValidationFailed(f"{name}: JSON nested deeper than {max_depth} levels", code="malformed_json",
                               fields={name: ["nested too deep"]}) from None
    except ValueError as exc:
        raise ValidationFailed(f"{name} is not valid JSON: {exc}", code="malformed_json",
                               fields={name: ["invalid JSON"]}) from None
    check_json_value(value, max_depth=max_depth, name=name)
    return value


def check_json_value(value: Any, *, max_depth: int = MAX_DEPTH, name: str = "body") -> None:
    """Refuse nesting deeper than ``max_depth`` and strings Postgres cannot store (NUL, lone
    surrogates). Iterative, so a deep value cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise ValidationFailed(f"{name}: JSON nested deeper than {max_depth} levels", code="malformed_json",
                                       fields={name: ["nested too deep"]})
            children = list(item.items()) if isinstance(item, dict) else [(None, v) for v in item]
            for key, child in children:
                if key is not None and text_is_unsafe(key):
                    raise _unsafe(name)
                stack.append((child, depth + 1))
        elif isinstance(item, str) and text_is_unsafe(item):
            raise _unsafe(name)


def _unsafe(name: str) -> ValidationFailed:
    return ValidationFailed(f"{name}: JSON strings must not contain NUL characters or lone surrogates",
                            code="malformed_json", fields={name: ["NUL or lone surrogate"]})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A number like 1e400 is valid JSON but no float: Python reads it as infinity, which
    neither the broker's JSON nor Postgres can carry. Refused like NaN."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value
