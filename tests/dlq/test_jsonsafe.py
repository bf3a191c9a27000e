"""dlq/jsonsafe.py: ``jsonb_safe``, which makes values storable in Postgres jsonb/text."""
from __future__ import annotations

import json
import random
import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from dlq.jsonsafe import jsonb_safe

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _old_safe_str(text: str) -> str:
    text = text.replace("\x00", "\\u0000")
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def old_jsonb_safe(value: Any) -> Any:
    """The JSON round-trip version this one replaced, kept here to compare against."""
    dumped = json.dumps(value)
    if "\\u0000" not in dumped and "\\ud" not in dumped:
        return value
    if isinstance(value, str):
        return _old_safe_str(value)
    if isinstance(value, dict):
        return {_old_safe_str(str(k)): old_jsonb_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [old_jsonb_safe(v) for v in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    return bool(a == b)


def test_nul_becomes_visible_text() -> None:
    assert jsonb_safe("a\x00b") == "a\\u0000b"
    assert jsonb_safe(["\x00"]) == ["\\u0000"]


def test_lone_surrogates_become_visible_text_and_pairs_are_kept() -> None:
    assert jsonb_safe("x\ud800y\udfff") == "x\\ud800y\\udfff"
    assert jsonb_safe("é 😀 \u2028") == "é 😀 \u2028"


def test_nested_structures_copy_only_what_changes() -> None:
    clean_list, clean_dict = [1, 2.5, "ok", None, True], {"k": ["v"]}
    value = {"a": clean_list, "b": {"c": clean_dict, "d": ["x", "y\x00"]}, "k\x00": 1, "z": "last"}
    out = jsonb_safe(value)
    assert out == {"a": clean_list, "b": {"c": clean_dict, "d": ["x", "y\\u0000"]}, "k\\u0000": 1, "z": "last"}
    assert list(out) == ["a", "b", "k\\u0000", "z"]  # order kept
    assert out["a"] is clean_list and out["b"]["c"] is clean_dict  # not copied
    assert value["b"]["d"] == ["x", "y\x00"] and "k\x00" in value  # the input is untouched


def test_a_clean_value_is_returned_as_is() -> None:
    value = {"args": [1, "two", {"three": [3.0, False, None]}], "é": "😀"}
    assert jsonb_safe(value) is value


def test_tuples_are_arrays() -> None:
    t = (1, "a")
    assert jsonb_safe(t) is t
    assert jsonb_safe((1, "a\x00")) == [1, "a\\u0000"]  # the old version left the NUL in (the write failed)


def test_types_json_refuses_are_refused() -> None:
    for bad in (b"bytes", {1, 2}, datetime(2025, 1, 1), Decimal("1.5"), object(), {"a": [uuid.uuid4()]}):
        with pytest.raises(TypeError):
            old_jsonb_safe(bad)
        with pytest.raises(TypeError):
            jsonb_safe(bad)
    with pytest.raises(TypeError):
        jsonb_safe({(1, 2): "tuple key"})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jsonb_safe(loop)
    shared = ["s"]
    assert jsonb_safe([shared, shared]) == [["s"], ["s"]]  # shared is not circular


def test_non_string_keys_are_kept() -> None:
    value = {1: "a", 2.5: "b", None: "c", False: "d"}
    assert jsonb_safe(value) is value


def test_large_values() -> None:
    big = "x" * (1 << 20)
    assert jsonb_safe(big) is big
    args = [1, big, {"payload": big}]
    assert jsonb_safe(args) is args
    dirty = big + "\x00" + "é" + "\ud800"
    assert jsonb_safe([dirty]) == [big + "\\u0000é\\ud800"]
    many = [{"i": i, "s": f"v{i}"} for i in range(50_000)]
    assert jsonb_safe(many) is many


_ATOMS = ["", "a", "\x00", "a\x00b", "\ud800", "\udfff", "x\udc00y", "😀", "é", "\\ud800", "\\u0000",
          "\u2028", 0, 1, -7, 2**70, 1.5, -0.0, 1e300, True, False, None]


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.random()
    if depth <= 0 or kind < 0.4:
        if rng.random() < 0.3:
            return "".join(rng.choice([s for s in _ATOMS if isinstance(s, str)]) for _ in range(rng.randint(1, 4)))
        return rng.choice(_ATOMS)
    if kind < 0.7:
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice([s for s in _ATOMS if isinstance(s, str)]) + str(i): _random_value(rng, depth - 1)
            for i in range(rng.randint(0, 4))}


def test_same_results_as_the_json_round_trip_version_on_many_values() -> None:
    rng = random.Random(8)
    changed = 0
    for _ in range(5_000):
        value = _random_value(rng, 4)
        new, old = jsonb_safe(value), old_jsonb_safe(value)
        assert same(new, old), (value, new, old)
        assert json.dumps(new) == json.dumps(old)
        changed += new is not value
    assert changed > 500  # the sample exercised the copying path, not only clean values
