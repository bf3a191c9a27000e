# syntax=docker/dockerfile:1
# Build stage: wheels for the locked runtime requirements, checked against their hashes (dev
# tools and the embedded Postgres/Redis of ./dev are not in requirements.lock, so not in the image).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock .
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock

# Runtime stage: no compilers, no pip cache, non-root.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DJANGO_SETTINGS_MODULE=taskplatform.settings \
    DJANGO_ENV=production
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl && rm -rf /wheels
COPY --chown=app:app . .
# Collect static files with the production storage (hashed names + manifest for WhiteNoise).
# A random key for this build step only (production refuses weak keys); the container refuses
# to start without a SECRET_KEY of its own.
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" DEBUG=false \
    python manage.py collectstatic --noinput -v 0
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "taskplatform.wsgi:application"]
