"""Static checks that run with the suite (configuration in pyproject.toml): ruff (pyflakes,
import sorting, bugbear, pyupgrade), the import layers (import-linter), and types (mypy with
the Django, DRF and Celery stubs); and the size of a module."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Largest module outside migrations (issue 20): one that grows past it is split by responsibility.
MAX_MODULE_LINES = 400
PACKAGES = ("taskplatform", "tasks", "dlq", "dashboard", "demo", "devtools", "bench", "tests")


def _run(*cmd: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_ENV": "development"}  # mypy's Django plugin loads the settings
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_ruff_finds_nothing() -> None:
    result = _run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_imports_follow_the_layers() -> None:
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_mypy_finds_nothing() -> None:
    result = _run(str(BIN / "mypy"), "--no-incremental", timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_no_module_outside_migrations_is_over_the_limit() -> None:
    too_long = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES:
                too_long[str(path.relative_to(ROOT))] = lines
    assert not too_long, too_long
