"""Deployment: docker-compose.yml checked with `docker-compose config` (no Docker engine
runs here), the Dockerfile, and the production settings."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def compose_config(docker_compose: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker_compose, "--env-file", ".env.example", *args, "config"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_compose_file_is_valid_and_complete(docker_compose: str) -> None:
    result = compose_config(docker_compose, "--profile", "rabbitmq", "--profile", "monitoring")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "redis", "rabbitmq", "migrate", "web", "worker", "relay", "beat", "flower",
                             "prometheus", "grafana"}
    for name in ("postgres", "redis", "rabbitmq", "web", "worker", "relay", "flower"):
        assert services[name]["healthcheck"]["test"], name
    assert "--appendonly" in services["redis"]["command"] and "redisdata:/data" in str(services["redis"]["volumes"])
    assert "pgdata" in str(services["postgres"]["volumes"])
    assert services["web"]["command"][:3] == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "taskplatform", "worker"]
    assert "ports" not in services["worker"] and "container_name" not in services["worker"]  # scalable
    assert services["relay"]["command"] == ["python", "manage.py", "outbox_relay"]
    assert "ports" not in services["relay"] and "container_name" not in services["relay"]  # scalable
    assert "--check" in services["relay"]["healthcheck"]["test"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "taskplatform", "beat"]
    # Flower's password comes from its environment, never its command line (the process list).
    assert "basic-auth" not in " ".join(services["flower"]["command"])
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "ops:change-me"
    for name in ("web", "flower", "prometheus", "grafana"):  # ops ports on the loopback only
        ports = services[name]["ports"]
        assert all((p.startswith("127.0.0.1:") if isinstance(p, str) else str(p.get("host_ip")) == "127.0.0.1")
                   for p in ports), (name, ports)
    for name in ("web", "worker", "relay", "beat", "flower"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert services[name]["environment"]["DJANGO_ENV"] == "production"
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    assert any("provisioning" in str(v) for v in services["grafana"]["volumes"])


def test_compose_default_services_have_no_profile(docker_compose: str) -> None:
    result = compose_config(docker_compose)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    default = {name for name, spec in services.items() if not spec.get("profiles")}
    assert default == {"postgres", "redis", "migrate", "web", "worker", "relay", "beat", "flower"}


def test_compose_refuses_to_run_without_secrets(docker_compose: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run([docker_compose, "--env-file", str(empty), "config"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")})
    assert result.returncode != 0
    assert any(name in result.stderr for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"))


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER app\n" in text and "HEALTHCHECK" in text and "collectstatic" in text
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert "requirements-dev" not in text  # no dev tools in the image


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # DJANGO_ALLOW_ASYNC_UNSAFE is set for the browser tests (tests/browser/conftest.py); a
    # deployment never has it, and check --deploy rightly refuses it.
    full = {k: v for k, v in os.environ.items()
            if k not in ("SECRET_KEY", "DEBUG", "DJANGO_ENV", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    full.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_production_settings_pass_check_deploy() -> None:
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_ENV="production",
                        SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="tasks.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_the_default_key_and_debug() -> None:
    result = run_manage("check", DJANGO_ENV="production")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    result = run_manage("check", DJANGO_ENV="production", SECRET_KEY=secrets.token_urlsafe(50), DEBUG="true")
    assert result.returncode != 0 and "DEBUG" in result.stderr


def test_without_django_env_it_is_production() -> None:
    """Secure by default: no DJANGO_ENV means production (no development key, no DEBUG)."""
    result = run_manage("check")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=secrets.token_urlsafe(50),
                        ALLOWED_HOSTS="tasks.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG, settings.DEVELOPMENT)",
                        SECRET_KEY=secrets.token_urlsafe(50))
    assert result.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("SECRET_KEY", "change-me-to-50-random-characters", "SECRET_KEY"),  # .env.example's
    ("SECRET_KEY", "short-but-random-Xq3", "SECRET_KEY"),
    ("SECRET_KEY", "a" * 60, "SECRET_KEY"),  # long, but 1 distinct character
    ("METRICS_TOKEN", "change-me", "METRICS_TOKEN"),
    ("METRICS_TOKEN", "tooshort", "METRICS_TOKEN"),
    ("FLOWER_BASIC_AUTH", "ops:change-me", "FLOWER_BASIC_AUTH"),
    ("FLOWER_BASIC_AUTH", "ops:short", "FLOWER_BASIC_AUTH"),
    ("FLOWER_BASIC_AUTH", "no-password", "FLOWER_BASIC_AUTH"),
    ("DATABASE_URL", "postgres://taskplatform:change-me@postgres:5432/taskplatform", "DATABASE_URL"),
    ("CELERY_BROKER_URL", "amqp://taskplatform:change-me@rabbitmq:5672//", "CELERY_BROKER_URL"),
])
def test_production_refuses_each_placeholder(name: str, value: str, says: str) -> None:
    env = {"DJANGO_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(50), name: value}
    result = run_manage("check", **env)
    assert result.returncode != 0 and says in result.stderr, result.stderr[-500:]


def test_production_accepts_real_secrets() -> None:
    strong = secrets.token_urlsafe(24)
    result = run_manage("check", DJANGO_ENV="production", SECRET_KEY=secrets.token_urlsafe(50), METRICS_TOKEN=strong,
                        FLOWER_BASIC_AUTH=f"ops:{strong}",
                        DATABASE_URL=f"postgres://taskplatform:{strong}@127.0.0.1:1/taskplatform")
    assert "refuses" not in result.stderr, result.stderr[-500:]


def test_production_has_no_demo_tasks_page_or_schedule() -> None:
    code = ("from celery import current_app\nfrom django.urls import resolve, Resolver404\n"
            "print(sorted(n for n in current_app.tasks if n.startswith(('tasks.demo.', 'tasks.examples.'))))\n"
            "try:\n    resolve('/demo/')\n    print('demo page')\nexcept Resolver404:\n    print('no demo page')\n")
    result = run_manage("shell", "-c", code, DJANGO_ENV="production", SECRET_KEY=secrets.token_urlsafe(50))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ["[]", "no demo page"]
    development = run_manage("shell", "-c", code, DJANGO_ENV="development")
    lines = development.stdout.strip().splitlines()
    assert "tasks.demo.crash" in lines[-2] and lines[-1] == "demo page"


def test_production_collectstatic_builds_the_manifest(tmp_path: Path) -> None:
    result = run_manage("collectstatic", "--noinput", "-v", "0", DJANGO_ENV="production",
                        SECRET_KEY=secrets.token_urlsafe(50),
                        STATIC_ROOT_OVERRIDE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "staticfiles.json").exists()
