"""HTTP routes for setup, login, logout, the caller's account, and user administration."""

from __future__ import annotations

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import Cookie, State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from appliance import audit
from appliance.auth import service
from appliance.auth.middleware import PUBLIC, PUBLIC_IF_REGISTRATION, token_from
from appliance.auth.schemas import (
    Credentials,
    PasswordChange,
    RegisterRequest,
    SessionRead,
    SetupRequest,
    SetupState,
    TokenRead,
    UserCreate,
    UserRead,
    UserUpdate,
)
from appliance.caller import CurrentUser, require_admin
from appliance.dependencies import DB, Caller, Id, Settings
from appliance.errors import NotFound, Unauthorized

UserId = Id


def _token_response(db: DB, user_id: int, state: State, status_code: int = 200) -> Response[TokenRead]:
    config: Settings = state.config
    ttl = config.token_ttl_minutes * 60
    token = service.issue_token(db, user_id, state.jwt_secret, ttl)
    cookie = Cookie(
        key=service.COOKIE_NAME,
        value=token,
        max_age=ttl,
        httponly=True,
        samesite="strict",
        secure=config.cookie_secure,
        path="/",
    )
    return Response(TokenRead(access_token=token, expires_in=ttl), cookies=[cookie], status_code=status_code)


REGISTRATION_KEY = "+registration"  # throttle key; no username can contain "+"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @get("/setup", operation_id="getSetupState", opt={PUBLIC: True}, sync_to_thread=True)
    def setup_state(self, db: DB, config: Settings) -> SetupState:
        return SetupState(
            needs_setup=service.user_count(db) == 0, registration_enabled=config.registration_enabled
        )

    @post("/setup", operation_id="setupFirstAdmin", opt={PUBLIC: True})
    async def setup(
        self, data: JSONBody[SetupRequest], db: DB, state: State, request: Request
    ) -> Response[TokenRead]:
        client = _client(request)
        audit.note(target=f"username={data.username}", setup_code_given=bool(data.setup_code))

        def create() -> Response[TokenRead]:
            user = service.create_first_admin(
                db,
                data.username,
                data.password,
                setup_code=data.setup_code,
                client=client,
                throttle=state.login_throttle,
            )
            audit.note_actor(user.id, user.username, user.role)
            return _token_response(db, user.id, state, HTTP_201_CREATED)

        return await state.password_gate.run(client, create)

    @get("/session", operation_id="getSession", opt={PUBLIC: True}, sync_to_thread=True)
    def session(self, db: DB, config: Settings, request: Request, state: State) -> SessionRead:
        """Who the console is logged in as, if anyone (200 either way)."""
        token = token_from(request)
        user = None
        if token:
            try:
                caller = service.authenticate_token(db, token, state.jwt_secret)
                user = service.user_read(service.get_user_row(db, caller.id))
            except (Unauthorized, NotFound):
                user = None
        return SessionRead(
            authenticated=user is not None,
            setup_required=service.user_count(db) == 0,
            registration_enabled=config.registration_enabled,
            user=user,
        )

    @post("/login", operation_id="login", opt={PUBLIC: True}, status_code=200)
    async def login(
        self, data: JSONBody[Credentials], db: DB, state: State, request: Request
    ) -> Response[TokenRead]:
        client = _client(request)
        audit.note(target=f"username={data.username}")

        def log_in() -> Response[TokenRead]:
            user_id = service.login(db, data.username, data.password, client, state.login_throttle)
            signed_in = service.user_read(service.get_user_row(db, user_id))
            audit.note_actor(signed_in.id, signed_in.username, signed_in.role)
            return _token_response(db, user_id, state)

        return await state.password_gate.run(client, log_in)

    @post("/logout", operation_id="logout", status_code=HTTP_204_NO_CONTENT, sync_to_thread=True)
    def logout(self, db: DB, user: Caller) -> Response[None]:
        service.revoke_token(db, user.token_id)
        response: Response[None] = Response(None, status_code=HTTP_204_NO_CONTENT)
        response.delete_cookie(service.COOKIE_NAME, path="/")
        return response

    @get("/me", operation_id="getMe", sync_to_thread=True)
    def me(self, db: DB, user: Caller) -> UserRead:
        return service.user_read(service.get_user_row(db, user.id))

    @post("/password", operation_id="changePassword", status_code=200)
    async def change_password(
        self, data: JSONBody[PasswordChange], db: DB, user: Caller, state: State, request: Request
    ) -> Response[TokenRead]:
        def change() -> Response[TokenRead]:
            service.change_password(db, user, data.current_password, data.new_password)
            return _token_response(db, user.id, state)

        return await state.password_gate.run(_client(request), change)

    @post("/register", operation_id="register", opt={PUBLIC_IF_REGISTRATION: True})
    async def register(
        self, data: JSONBody[RegisterRequest], db: DB, config: Settings, request: Request, state: State
    ) -> UserRead:
        """Open registration (viewer role) when enabled; otherwise only an admin may register someone.

        Open registrations count against the client like failed logins (a few, then a doubling wait):
        each costs an argon2 hash and a row, and nobody needs a dozen accounts a minute.
        """
        caller = request.scope.get("user")
        is_admin = isinstance(caller, CurrentUser) and caller.is_admin
        client = _client(request)
        if not config.registration_enabled:
            if not isinstance(caller, CurrentUser):
                raise Unauthorized("authentication required")
            require_admin(caller)

        def register_viewer() -> UserRead:
            if config.registration_enabled and not is_admin:
                state.login_throttle.check(REGISTRATION_KEY, client)
            user = service.create_user(
                db, UserCreate(username=data.username, password=data.password, role="viewer")
            )
            if not is_admin:
                state.login_throttle.failed(REGISTRATION_KEY, client)
            return user

        return await state.password_gate.run(client, register_viewer)


class UsersController(Controller):
    path = "/users"
    tags = ["users"]

    @get("/", operation_id="listUsers", sync_to_thread=True)
    def list_users(self, db: DB, user: Caller) -> list[UserRead]:
        require_admin(user)
        return service.list_users(db)

    @post("/", operation_id="createUser")
    async def create_user(
        self, data: JSONBody[UserCreate], db: DB, user: Caller, state: State, request: Request
    ) -> UserRead:
        require_admin(user)
        return await state.password_gate.run(_client(request), service.create_user, db, data)

    @patch("/{user_id:int}", operation_id="updateUser")
    async def update_user(
        self,
        user_id: UserId,
        data: JSONBody[UserUpdate],
        db: DB,
        user: Caller,
        state: State,
        request: Request,
    ) -> UserRead:
        require_admin(user)
        return await state.password_gate.run(_client(request), service.update_user, db, user_id, data)

    @delete("/{user_id:int}", operation_id="deleteUser", sync_to_thread=True)
    def delete_user(self, user_id: UserId, db: DB, user: Caller) -> None:
        require_admin(user)
        service.delete_user(db, user_id, user)
