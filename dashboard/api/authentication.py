"""``Authorization: Token <key>``: django-rest-knox's check (the key's SHA-512 digest, expired
tokens refused and deleted) plus when each token was last used, written at most once a
minute per token."""
from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone
from knox.auth import TokenAuthentication

from dashboard.api import schema  # noqa: F401  (registers the OpenAPI description of this class)
from dlq.models import ApiToken

LAST_USED_EVERY = timedelta(minutes=1)


class ApiTokenAuthentication(TokenAuthentication):  # type: ignore[misc]
    def _cleanup_token(self, auth_token: ApiToken) -> bool:
        # knox also deletes the user's *other* expired tokens here, a query on every request;
        # those go in the daily retention (dlq.services housekeeping) instead.
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            auth_token.delete()
            return True
        return False

    def validate_user(self, auth_token: ApiToken) -> tuple[User, ApiToken]:
        user, token = super().validate_user(auth_token)
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return user, token
