"""docker-compose.yml checked with `docker-compose config` (no Docker engine runs here)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Debian's docker-compose; installed here when missing and we may (root with apt-get)."""
    found = shutil.which("docker-compose")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && apt-get install -y -qq docker-compose", shell=True,
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        found = shutil.which("docker-compose")
    if not found:
        pytest.skip("docker-compose is not installed and cannot be installed here (needs root and apt-get)")
    return found


def test_compose_file_is_valid_and_complete(docker_compose: str) -> None:
    result = subprocess.run([docker_compose, "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"postgres", "redis", "web", "worker", "beat", "flower"} <= set(services)
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "taskplatform", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "taskplatform", "beat"]
    assert any(arg.startswith("--basic-auth=") for arg in services["flower"]["command"])
    assert services["web"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["web"]["command"][0] == "gunicorn"


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER app\n" in text and "HEALTHCHECK" in text and "collectstatic" in text
    assert text.count("FROM ") == 2  # multi-stage
