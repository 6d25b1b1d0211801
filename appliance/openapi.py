"""What the OpenAPI document must say beyond what Litestar derives from the handlers, so it says what the code does.

- Statuses: Litestar documents a route's success status and 400. The appliance answers more, the same way on
  every route, from layers Litestar cannot see (auth/request_checks.py, the auth middleware, the services'
  AppError subclasses): they are filled in from what each route is (public or not, state-changing, with a
  body, with parameters).
- Inputs: Litestar's own schemas of parameters and bodies lose constraints (a bound of 0 is dropped, one on an
  optional value is put beside the `oneOf` or lost, 2^63-1 is written as a float that means 2^63, a nested
  Struct that refuses unknown fields is left open). So every parameter and every JSON or form body is
  described by msgspec, from the very type Litestar validates it with (the handler's signature model), and
  JSON bodies are converted strictly against that type (appliance/request_bodies.py): the document and the
  validation come from one source. Components Litestar made for those types are replaced under their names.
- A route that streams its body itself (`request_max_body_size=None`, no `data`: an archive, a bundle) gets
  that body documented as bytes (`application/octet-stream`, at least one).
- Response headers say what is sent (Last-Modified is an HTTP date, not an ISO date-time).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.datastructures import UploadFile
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.discriminator import Discriminator
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import ParameterKwarg

from appliance.auth.middleware import PUBLIC, PUBLIC_IF_REGISTRATION
from appliance.request_bodies import JSON, body_media_type, body_type

logger = logging.getLogger(__name__)

ERROR_SCHEMA = "ErrorBody"
COMPONENTS = "#/components/schemas/"
STATE_CHANGING = {"post", "put", "patch", "delete"}
THROTTLED = {"login", "setupFirstAdmin", "register", "changePassword"}
REASONS = {
    "400": "bad request: a parameter or body the document does not allow (the detail names it), or an unknown Host",
    "401": "not logged in, or the token expired or was revoked",
    "403": "not allowed: the role, the owner, another origin, or a wrong setup code",
    "404": "not found (or not visible to the caller)",
    "409": "conflict with the current state",
    "413": "too large",
    "415": "the body is not of the type this route takes",
    "422": "allowed by the document, but it cannot be done: the current state or what the values mean refuses it"
    " (the detail says why)",
    "429": "throttled: try again after Retry-After seconds",
    "503": "busy: too many requests at once, or a service is unavailable",
    "507": "the data disk is full",
}
# RFC 9110's IMF-fixdate, what Last-Modified carries.
HTTP_DATE = (
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT$"
)
BINARY = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}


def _error_response(code: str) -> OpenAPIResponse:
    ref = Reference(ref=f"{COMPONENTS}{ERROR_SCHEMA}")
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


def _statuses(method: str, path: str, handler: Any, operation: Any) -> set[str]:
    public = bool(handler.opt.get(PUBLIC) or handler.opt.get(PUBLIC_IF_REGISTRATION))
    has_body = body_media_type(handler) is not None or _streams_its_body(handler)
    codes = {"400", "503"}
    if not public:
        # a path id, or an id in the body or query, that is not (visible) there; a state that does not allow it
        codes |= {"401", "403", "404", "409"}
    if "{" in path:
        codes.add("404")
    if method in STATE_CHANGING:
        codes |= {"403", "409", "422", "507"}
    if has_body:
        codes |= {"413", "415", "422"}
    if any(getattr(p, "param_in", None) == "query" for p in operation.parameters or []):
        codes.add("422")  # parameters each allowed alone that cannot go together (the detail says which)
    if handler.operation_id in THROTTLED:
        codes |= {"401", "429"}  # a wrong password (login, password change) is a 401 there too
    return codes


# --- msgspec's JSON Schema as Litestar's spec objects ------------------------------------------------------


def _snake(key: str) -> str:
    return {"not": "schema_not", "if": "schema_if", "else": "schema_else"}.get(
        key, re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
    )


def spec_schema(node: Any) -> Any:
    """A JSON Schema (a dict, as msgspec writes it) as Litestar's Schema / Reference objects."""
    if not isinstance(node, dict):
        return node  # `items: false` after prefixItems, `additionalProperties: false`
    if "$ref" in node:
        return Reference(ref=node["$ref"])
    fields: dict[str, Any] = {}
    for key, value in node.items():
        name = _snake(key)
        if key in ("properties", "patternProperties", "dependentSchemas"):
            fields[name] = {k: spec_schema(v) for k, v in value.items()}
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            fields[name] = [spec_schema(v) for v in value]
        elif key in (
            "items",
            "additionalProperties",
            "not",
            "contains",
            "propertyNames",
            "if",
            "then",
            "else",
        ):
            fields[name] = spec_schema(value)
        elif key == "discriminator":
            fields[name] = Discriminator(property_name=value["propertyName"], mapping=value.get("mapping"))
        elif key == "type":
            fields[name] = [OpenAPIType(t) for t in value] if isinstance(value, list) else OpenAPIType(value)
        elif key == "format" and value in {f.value for f in OpenAPIFormat}:
            fields[name] = OpenAPIFormat(value)
        else:
            fields[name] = value
    return Schema(**fields)


def _upload_schema(kind: type) -> dict[str, Any]:
    if isinstance(kind, type) and issubclass(kind, UploadFile):
        return dict(BINARY)
    raise NotImplementedError(f"no JSON Schema for {kind!r}")


def component_classes(types: list[Any]) -> list[type]:
    """Every Struct, dataclass, TypedDict, NamedTuple and Enum the types use (what msgspec makes components of)."""
    found: dict[type, None] = {}

    def walk(info: Any) -> None:
        cls = getattr(info, "cls", None)
        if cls is not None and not isinstance(info, msgspec.inspect.CustomType):
            if cls in found:
                return
            found[cls] = None
        for attribute in ("type", "item_type", "key_type", "value_type"):
            if hasattr(info, attribute):
                walk(getattr(info, attribute))
        for attribute in ("types", "item_types"):
            for inner in getattr(info, attribute, ()) or ():
                walk(inner)
        for field in getattr(info, "fields", ()) or ():
            walk(field.type)

    for info in msgspec.inspect.multi_type_info(types):
        walk(info)
    return list(found)


def _full_name(cls: type) -> str:
    return re.sub(r"[^a-zA-Z0-9.\-_]", "_", f"{cls.__module__}.{cls.__qualname__}")


def _component_names(
    msgspec_names: list[str], classes: list[type], existing: dict[str, Any]
) -> dict[str, str]:
    """msgspec's name of each component -> the name Litestar gave the same class (kept, so the document's
    response schemas and links still point at it), or msgspec's own name for a class Litestar did not name."""
    by_name = {cls.__name__: cls for cls in classes}
    by_full_name = {_full_name(cls): cls for cls in classes}
    renamed = {}
    for name in msgspec_names:
        cls = by_full_name.get(name) or by_name[name]
        underscored = "_".join(_full_name(cls).split("."))
        titled = [key for key, schema in existing.items() if getattr(schema, "title", None) == cls.__name__]
        same = [key for key in titled if key == cls.__name__ or underscored.endswith("_" + key)]
        if len(same) > 1:
            raise RuntimeError(f"OpenAPI components {same} all look like {cls!r}")
        renamed[name] = same[0] if same else name
        taken = existing.get(renamed[name])
        if taken is not None and getattr(taken, "title", None) != cls.__name__:
            raise RuntimeError(f"OpenAPI component {renamed[name]} names another type than {cls!r}")
    return renamed


def _rename_refs(node: Any, renamed: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(COMPONENTS):
            return {**node, "$ref": COMPONENTS + renamed.get(ref[len(COMPONENTS) :], ref[len(COMPONENTS) :])}
        return {key: _rename_refs(value, renamed) for key, value in node.items()}
    if isinstance(node, list):
        return [_rename_refs(value, renamed) for value in node]
    return node


def describe_types(types: list[Any], components: dict[str, Any]) -> list[Any]:
    """msgspec's schemas of `types` as spec objects; the components they use added to (or replacing those
    of the same class in) `components`."""
    schemas, found = msgspec.json.schema_components(
        types, schema_hook=_upload_schema, ref_template=COMPONENTS + "{name}"
    )
    renamed = _component_names(list(found), component_classes(types), components)
    for name, schema in found.items():
        components[renamed[name]] = spec_schema(_rename_refs(schema, renamed))
    return [spec_schema(_rename_refs(schema, renamed)) for schema in schemas]


# --- parameters and bodies ---------------------------------------------------------------------------------


def parameter_types(handler: Any) -> dict[tuple[str, str], Any]:
    """(location, name in the request) -> the type Litestar validates the parameter with: the handler's own
    and those of the dependencies it takes (a Provide function's parameters are the request's too)."""
    found: dict[tuple[str, str], Any] = {}
    sources = [handler, *handler.resolve_dependencies().values()]
    for source in sources:
        validated = {field.name: field.type for field in msgspec.structs.fields(source.signature_model)}
        for name, field in source.parsed_fn_signature.parameters.items():
            kwarg = field.kwarg_definition
            if name not in validated or (kwarg is not None and not isinstance(kwarg, ParameterKwarg)):
                continue
            for location in ("query", "header", "cookie"):
                alias = getattr(kwarg, location, None) if kwarg is not None else None
                if alias:
                    found.setdefault(
                        (location, alias.lower() if location == "header" else alias), validated[name]
                    )
            found.setdefault(("path", name), validated[name])
            found.setdefault(("query", name), validated[name])
    return found


def _multipart_files(schema: Any) -> None:
    """A `list[UploadFile]` form: at least one file part (none is a malformed body), and nothing but files."""
    files = (getattr(schema, "properties", None) or {}).get("files")
    if isinstance(files, Schema) and files.type == OpenAPIType.ARRAY:
        files.min_items = 1
        schema.required = ["files"]
        schema.additional_properties = False


def _is_form_model(kind: Any) -> bool:
    """A form body read into a Struct or dataclass (not a bare list of files)."""
    info = msgspec.inspect.type_info(kind)
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    return isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType)


def _describe_inputs(operations: list[tuple[Any, Any]], components: dict[str, Any]) -> None:
    targets: list[tuple[Any, str, Any]] = []  # (spec object, attribute or media type, type)
    for operation, handler in operations:
        types = parameter_types(handler)
        for parameter in operation.parameters or []:
            location = str(getattr(parameter.param_in, "value", parameter.param_in))
            kind = types.get((location, parameter.name.lower() if location == "header" else parameter.name))
            if kind is not None:
                targets.append((parameter, "schema", kind))
        body = operation.request_body
        media_type = body_media_type(handler)
        kind = body_type(handler)
        if body is None or isinstance(body, Reference) or media_type is None or kind is None:
            continue
        media = body.content.get(media_type)
        if media is None:
            continue
        if media_type == JSON or _is_form_model(kind):
            targets.append((media, "schema", kind))
        else:
            _multipart_files(media.schema)
    described = describe_types([kind for _, _, kind in targets], components)
    for (owner, attribute, _), schema in zip(targets, described, strict=True):
        old = getattr(owner, attribute)
        if isinstance(schema, Schema) and isinstance(old, Schema) and old.default is not None:
            schema.default = old.default
        setattr(owner, attribute, schema)


def _streams_its_body(handler: Any) -> bool:
    """The handler reads its body itself (request.stream()): no size limit of Litestar's and no `data`."""
    return handler.request_max_body_size is None and body_media_type(handler) is None


def _raw_body(operation: Any, handler: Any) -> None:
    if _streams_its_body(handler) and operation.request_body is None:
        schema = spec_schema({**BINARY, "minLength": 1})  # an empty body is a 400
        operation.request_body = RequestBody(
            content={"application/octet-stream": OpenAPIMediaType(schema=schema)},
            required=True,
            description=handler.description,
        )


def _name_file_media_types(responses: dict[str, Any], handler: Any) -> None:
    """Litestar documents a File response under an empty media type: use the one the route declares."""
    declared = str(handler.media_type) if handler.media_type else ""
    for response in responses.values():
        content = getattr(response, "content", None)
        if content and "" in content:
            content[
                declared if "/" in declared and declared != "application/json" else "application/octet-stream"
            ] = content.pop("")


def _true_headers(responses: dict[str, Any]) -> None:
    """Litestar documents a File response's Last-Modified as an ISO date-time; it is sent as an HTTP date."""
    for response in responses.values():
        for name, header in (getattr(response, "headers", None) or {}).items():
            if name.lower() == "last-modified" and isinstance(header.schema, Schema):
                header.schema = Schema(type=OpenAPIType.STRING, pattern=HTTP_DATE)
                header.description = "when the file last changed, as an HTTP date (RFC 9110)"


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
    operations = []
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            handler = handlers.get(str(operation.operation_id)) if operation is not None else None
            if operation is None or handler is None:
                continue
            operations.append((operation, handler))
            _raw_body(operation, handler)
            responses = operation.responses if operation.responses is not None else {}
            _name_file_media_types(responses, handler)
            _true_headers(responses)
            for code in sorted(_statuses(method, path, handler, operation)):
                responses.setdefault(code, _error_response(code))
            operation.responses = responses
    _describe_inputs(operations, components.schemas)
    components.schemas = dict(sorted(components.schemas.items()))
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
