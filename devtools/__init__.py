"""The ./dev tooling: embedded Postgres and Redis for a machine that has neither, and the
launcher behind ./dev up, test, manage, chaos and bench. Not part of the Django project."""
