"""create_app(): the Litestar application with its routes, lifespan, error handler and static console."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.static_files import create_static_files_router

from appliance.audit.controllers import AuditController
from appliance.audit.middleware import AuditMiddleware, AuditWriter
from appliance.auth.controllers import AuthController, UsersController
from appliance.auth.middleware import PUBLIC, AuthMiddleware
from appliance.auth.password_gate import PasswordGate
from appliance.auth.request_checks import (
    RequestPolicy,
    RouteMethods,
    content_type_middleware,
    head_as_get,
    send_options,
    send_refusal,
    with_security_headers,
)
from appliance.auth.setup_code import announce_setup_code
from appliance.auth.throttle import LoginThrottle
from appliance.camera.controllers import CamerasController
from appliance.catalog.controllers import DatasetController, ImageController
from appliance.config import Config, ensure_jwt_secret
from appliance.db import ConnectionPool, migrate, open_database
from appliance.db.connection import set_page_cache_mb
from appliance.dependencies import DEPENDENCIES
from appliance.errors import DISK_FULL, AppError, error_body, is_disk_full
from appliance.evaluation.controllers import EvaluationsController, ModelEvaluationsController
from appliance.fleet.controllers import FleetBundlesController, FleetController, FleetImportController
from appliance.ids import MAX_ID
from appliance.models.controllers import InferenceController, ModelController, SuggestionsController
from appliance.openapi import install as complete_openapi_document
from appliance.outputs.controllers import OutputsController
from appliance.request_bodies import refuse_loose_json
from appliance.shadow.controllers import CameraShadowController, ShadowEventsController
from appliance.stations.controllers import EventsController, RevisionsController
from appliance.storage import ImageStore
from appliance.system.controllers import SystemController
from appliance.training.controllers import BaseModelController, TrainingJobController
from appliance.transfers.controllers import ImportController

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
WEBUI_DIR = Path(__file__).resolve().parent.parent / "webui"


class ApplianceApp(Litestar):
    """The Litestar app with the checks every request passes before routing (see auth/request_checks.py)
    and the security headers on every answer, 401s and routing errors included."""

    policy: RequestPolicy
    _route_methods: RouteMethods | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # ASGI; typed loosely on purpose
        if scope["type"] in ("http", "websocket"):
            if scope["type"] == "http":
                send = with_security_headers(send)
            refusal = self.policy.refusal(scope)
            if refusal is not None:
                await send_refusal(scope, send, *refusal)
                return
            if scope.get("method") == "HEAD":
                scope, receive, send = head_as_get(scope, receive, send)
            elif scope.get("method") == "OPTIONS":
                if self._route_methods is None:
                    self._route_methods = RouteMethods(self.routes)
                await send_options(send, self._route_methods.allowed(scope["path"]))
                return
        await super().__call__(scope, receive, send)


def _validation_detail(exc: ValidationException) -> str:
    parts = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key = item.get("key")
            message = str(item.get("message", ""))
            if message == f"Expected `int` <= {MAX_ID}":  # an id past SQLite's 64-bit integers
                message = "out of range (at most 2^63-1)"
            parts.append(f"{key}: {message}" if key else str(message))
    return "invalid request: " + ("; ".join(parts) if parts else str(exc.detail))


def _raised_in(exc: BaseException, places: tuple[str, ...]) -> bool:
    """Whether the innermost Python frame of the exception is in a file whose path contains one of `places`."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename.replace("\\", "/") if tb is not None else ""
    return any(place in filename for place in places)


def handle_error(request: Request[Any, Any, State], exc: Exception) -> Response[dict[str, Any]]:
    """The one error shape: {"status_code": N, "detail": "..."}; a 500 is logged, never explained."""
    if isinstance(exc, AppError):
        return Response(
            error_body(exc.status_code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )
    if isinstance(exc, ValidationException):
        return Response(error_body(400, _validation_detail(exc)), status_code=400)
    if isinstance(exc, HTTPException):
        headers = {k: v for k, v in (exc.headers or {}).items()}
        detail = str(exc.detail)
        if exc.status_code == 413:
            limit_mb = request.app.state.config.max_upload_mb
            detail = f"request body too large: the limit is {limit_mb} MB (config key max_upload_mb)"
        return Response(error_body(exc.status_code, detail), status_code=exc.status_code, headers=headers)
    if is_disk_full(exc):
        return Response(error_body(507, DISK_FULL), status_code=507)
    if isinstance(exc, OverflowError):  # a path or query number past SQLite's 64-bit integers
        return Response(
            error_body(400, "a number in the request is out of range (at most 2^63-1)"), status_code=400
        )
    if isinstance(exc, IndexError | UnicodeDecodeError) and _raised_in(
        exc, ("litestar/_kwargs/", "litestar/_multipart")
    ):
        # Litestar's multipart reader trips over an empty or malformed body instead of refusing it.
        return Response(error_body(400, "malformed multipart body: no readable parts"), status_code=400)
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        error_body(500, "internal server error; the details are in the appliance log"), status_code=500
    )


def api_routers() -> list[Any]:
    """Every domain's controllers; later domains add theirs here."""
    return [
        AuthController,
        UsersController,
        DatasetController,
        ImageController,
        SystemController,
        CamerasController,
        EventsController,
        RevisionsController,
        OutputsController,
        TrainingJobController,
        BaseModelController,
        ImportController,
        ModelController,
        InferenceController,
        SuggestionsController,
        ModelEvaluationsController,
        EvaluationsController,
        CameraShadowController,
        ShadowEventsController,
        AuditController,
        FleetBundlesController,
        FleetController,
        FleetImportController,
    ]


def create_app(config: Config) -> Litestar:
    jwt_secret = ensure_jwt_secret(config)
    set_page_cache_mb(config.catalog_cache_mb)

    def open_catalog(app: Litestar) -> None:
        config.data_path.mkdir(parents=True, exist_ok=True)
        config.runtime_path.mkdir(parents=True, exist_ok=True)
        loop_db = open_database(config.db_path)
        migrate(loop_db, config.db_path)
        announce_setup_code(loop_db)
        app.state.login_throttle.load_trusted(loop_db)
        app.state.loop_db = loop_db
        app.state.pool = ConnectionPool(config.db_path)

    async def bound_thread_pool(app: Litestar) -> None:
        # anyio's default is 40 worker threads; the limiter lives in the event loop, so it is set from it.
        anyio.to_thread.current_default_thread_limiter().total_tokens = config.web_threads

    def close_catalog(app: Litestar) -> None:
        if "pool" in app.state:
            app.state.pool.close()
        if "loop_db" in app.state:
            app.state.loop_db.conn.close()

    api = Router(path=API_PREFIX, route_handlers=api_routers())
    console = create_static_files_router(
        path="/", directories=[WEBUI_DIR], html_mode=True, opt={PUBLIC: True}, name="console"
    )
    app = ApplianceApp(
        route_handlers=[api, console],
        dependencies=DEPENDENCIES,
        # Audit sits outside authentication: it sees the caller the auth middleware found, and its 401s.
        middleware=[content_type_middleware, AuditMiddleware, AuthMiddleware],
        before_request=refuse_loose_json,  # JSON bodies converted strictly (request_bodies.py)
        exception_handlers={Exception: handle_error},
        on_startup=[open_catalog, bound_thread_pool],
        on_shutdown=[close_catalog],
        state=State(
            {
                "config": config,
                "jwt_secret": jwt_secret,
                "login_throttle": LoginThrottle(),
                "password_gate": PasswordGate(),
                "image_store": ImageStore(config),
                "audit_writer": AuditWriter(config),
            }
        ),
        request_max_body_size=config.max_upload_mb * 1024 * 1024,
        openapi_config=OpenAPIConfig(
            title="Appliance API",
            version="1",
            path=f"{API_PREFIX}/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        debug=False,
    )
    app.policy = RequestPolicy(config)
    complete_openapi_document(app)
    return app


__all__ = ["API_PREFIX", "create_app"]
