"""Authentication of every request: Bearer header or the console's HttpOnly cookie."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult

from appliance.auth.service import COOKIE_NAME, authenticate_token
from appliance.errors import Unauthorized

# Routes marked with this opt key are public: health, setup, login, the static console.
PUBLIC = "public"


def token_from(connection: ASGIConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return connection.cookies.get(COOKIE_NAME) or None


class AuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, exclude_from_auth_key=PUBLIC, **kwargs)

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        token = token_from(connection)
        if not token:
            raise Unauthorized("authentication required")
        state = connection.app.state
        # An indexed lookup on a connection owned by the event-loop thread: tens of microseconds,
        # and a revoked token is refused on the very next request.
        user = authenticate_token(state.loop_db, token, state.jwt_secret)
        return AuthenticationResult(user=user, auth=token)
