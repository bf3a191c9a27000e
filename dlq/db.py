"""The failure path's one database helper, shared by the spool and the result backend."""
from __future__ import annotations

from django.db import connection


def close_broken_connection() -> None:
    """Drop the connection a statement just failed on (Postgres down, a broken socket), so that
    the next statement opens a new one instead of failing on the dead one."""
    try:
        connection.close()
    except Exception:  # the connection is already broken; closing it is best effort
        pass
