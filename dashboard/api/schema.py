"""OpenAPI description of our token authentication (drf-spectacular)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from drf_spectacular.extensions import OpenApiAuthenticationExtension

if TYPE_CHECKING:  # a runtime import is circular: DRF loads this while importing its views
    from drf_spectacular.openapi import AutoSchema


# drf-spectacular registers extensions in an unannotated __init_subclass__.
class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "dashboard.api.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <key>`: a key from `manage.py operator_token` (expires; revocable)."}
