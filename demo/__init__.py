"""The demo app: the contract's demo tasks (``tasks.demo.*``), the example tasks
(``tasks.examples.*``), the /demo/ page that enqueues them, and ``seed_demo``. Installed only in
development (``DJANGO_ENV=development``, which ``./dev`` sets): production has none of it.

It sits on top of the layers (``import-linter`` contract in pyproject.toml): it may use the
task runtime, the dead-letter domain and the dashboard's pieces; nothing imports it."""
