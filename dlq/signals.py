"""Signal wiring, connected from ``DlqConfig.ready()``."""
from __future__ import annotations

from typing import Any


def create_role_groups(sender: Any, **kwargs: Any) -> None:
    """After every migrate (permissions exist by then): the viewer/operator/admin groups."""
    if getattr(sender, "label", None) != "dlq":
        return
    from dlq.roles import ensure_role_groups

    ensure_role_groups()
