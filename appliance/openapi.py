"""What the OpenAPI document must say beyond what Litestar derives from the handlers.

Litestar documents a route's success status and 400. The appliance answers more, the same way on every
route, from layers Litestar cannot see (auth/request_checks.py, the auth middleware, the services' AppError
subclasses): this fills those in from what each route is (public or not, state-changing, with a body, with
path parameters), and closes request bodies whose Struct refuses unknown fields (additionalProperties:
false), so a client generated from the document, or schemathesis, meets no undocumented answer.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from appliance.auth.middleware import PUBLIC, PUBLIC_IF_REGISTRATION

ERROR_SCHEMA = "ErrorBody"
STATE_CHANGING = {"post", "put", "patch", "delete"}
THROTTLED = {"login", "setupFirstAdmin", "register", "changePassword"}
REASONS = {
    "400": "bad request: an unknown Host, a malformed parameter or body",
    "401": "not logged in, or the token expired or was revoked",
    "403": "not allowed: the role, the owner, another origin, or a wrong setup code",
    "404": "not found (or not visible to the caller)",
    "409": "conflict with the current state",
    "413": "too large",
    "415": "the body is not of the type this route takes",
    "422": "the request is well formed but cannot be done as asked",
    "429": "throttled: try again after Retry-After seconds",
    "503": "busy: too many requests at once, or a service is unavailable",
    "507": "the data disk is full",
}


def _error_response(code: str) -> OpenAPIResponse:
    ref = Reference(ref=f"#/components/schemas/{ERROR_SCHEMA}")
    return OpenAPIResponse(
        description=REASONS[code], content={"application/json": OpenAPIMediaType(schema=ref)}
    )


def _handlers_by_operation(app: Litestar) -> dict[str, Any]:
    found = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if handler.operation_id:
                found[str(handler.operation_id)] = handler
    return found


def _statuses(method: str, path: str, handler: Any) -> set[str]:
    public = bool(handler.opt.get(PUBLIC) or handler.opt.get(PUBLIC_IF_REGISTRATION))
    data = handler.parsed_fn_signature.parameters.get("data")
    codes = {"400", "503"}
    if not public:
        # a path id, or an id in the body or query, that is not (visible) there; a state that does not allow it
        codes |= {"401", "403", "404", "409"}
    if "{" in path:
        codes.add("404")
    if method in STATE_CHANGING:
        codes |= {"403", "409", "422", "507"}
    if data is not None:
        codes |= {"413", "415", "422"}
    if handler.operation_id in THROTTLED:
        codes |= {"401", "429"}  # a wrong password (login, password change) is a 401 there too
    return codes


def _closed_body(handler: Any) -> type[msgspec.Struct] | None:
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None or getattr(data.kwarg_definition, "media_type", None) != RequestEncodingType.JSON:
        return None
    for candidate in (data.annotation, *getattr(data, "inner_types", ())):
        kind = getattr(candidate, "annotation", candidate)
        if (
            isinstance(kind, type)
            and issubclass(kind, msgspec.Struct)
            and kind.__struct_config__.forbid_unknown_fields
        ):
            return kind
    return None


MAX_INTEGER = 2**63 - 1  # SQLite's INTEGER: a larger id or cursor is a 400, so the document says so


def _bound_integers(operation: Any) -> None:
    """Integer path and query parameters end where SQLite's 64-bit integers do."""
    for parameter in operation.parameters or []:
        schema = getattr(parameter, "schema", None)
        for candidate in [schema, *(getattr(schema, "one_of", None) or [])]:
            if not (isinstance(candidate, Schema) and candidate.type == OpenAPIType.INTEGER):
                continue
            # None, or le=2**63-1 that Litestar wrote as the float 9.223372036854776e18 (= 2**63, one too many)
            if candidate.maximum is None or candidate.maximum >= MAX_INTEGER:
                candidate.maximum = MAX_INTEGER


def _name_file_media_types(responses: dict[str, Any], handler: Any) -> None:
    """Litestar documents a File response under an empty media type: use the one the route declares."""
    declared = str(handler.media_type) if handler.media_type else ""
    for response in responses.values():
        content = getattr(response, "content", None)
        if content and "" in content:
            content[
                declared if "/" in declared and declared != "application/json" else "application/octet-stream"
            ] = content.pop("")


def complete_document(app: Litestar, document: OpenAPI) -> OpenAPI:
    handlers = _handlers_by_operation(app)
    components = document.components
    if components.schemas is None:
        components.schemas = {}
    components.schemas[ERROR_SCHEMA] = Schema(
        type=OpenAPIType.OBJECT,
        required=["status_code", "detail"],
        properties={
            "status_code": Schema(type=OpenAPIType.INTEGER),
            "detail": Schema(type=OpenAPIType.STRING),
        },
        additional_properties=False,
    )
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            handler = handlers.get(str(operation.operation_id)) if operation is not None else None
            if operation is None or handler is None:
                continue
            _bound_integers(operation)
            responses = operation.responses if operation.responses is not None else {}
            _name_file_media_types(responses, handler)
            for code in sorted(_statuses(method, path, handler)):
                responses.setdefault(code, _error_response(code))
            operation.responses = responses
            closed = _closed_body(handler)
            body = operation.request_body
            if closed is None or body is None or isinstance(body, Reference):
                continue
            for media in body.content.values():
                ref = media.schema
                if isinstance(ref, Reference):
                    schema = components.schemas.get(ref.ref.rsplit("/", 1)[-1])
                    if isinstance(schema, Schema):
                        schema.additional_properties = False
    return document


class _CompletedOpenAPIPlugin(OpenAPIPlugin):
    """Litestar's OpenAPI plugin whose document is completed once, when first built."""

    __slots__ = ()

    def _build_openapi(self) -> OpenAPI:
        return complete_document(self.app, super()._build_openapi())


def install(app: Litestar) -> None:
    """Make the app's OpenAPI document (served at /api/v1/schema) the completed one."""
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin.__class__ = _CompletedOpenAPIPlugin  # same slots: only the build step changes
