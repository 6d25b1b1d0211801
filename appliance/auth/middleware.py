"""Authentication of every request: Bearer header or the console's HttpOnly cookie."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import Receive, Scope, Send

from appliance.auth.service import COOKIE_NAME, authenticate_token
from appliance.errors import Unauthorized

# Routes marked with this opt key are public: health, setup, login, the static console.
PUBLIC = "public"
# Routes marked with this opt key are public only while the config enables self-registration.
PUBLIC_IF_REGISTRATION = "public_if_registration"


def token_from(connection: ASGIConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return connection.cookies.get(COOKIE_NAME) or None


class AuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, exclude_from_auth_key=PUBLIC, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if (
            handler is not None
            and handler.opt.get(PUBLIC_IF_REGISTRATION)
            and scope["app"].state.config.registration_enabled
        ):
            await self.app(scope, receive, send)  # anonymous: the handler finds no "user" in the scope
            return
        await super().__call__(scope, receive, send)

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        token = token_from(connection)
        if not token:
            raise Unauthorized("authentication required")
        state = connection.app.state
        # An indexed lookup on a connection owned by the event-loop thread: tens of microseconds,
        # and a revoked token is refused on the very next request.
        user = authenticate_token(state.loop_db, token, state.jwt_secret)
        return AuthenticationResult(user=user, auth=token)
