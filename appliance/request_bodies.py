"""A JSON request body is read as JSON, strictly: what the OpenAPI document says its type is, nothing looser.

Litestar converts the parsed body to the handler's `data` type with msgspec's lax rules (strict=False), made
for query strings and form fields, which have only strings: in a JSON body they take `0`/`1` and `"true"`
for a boolean, `"12"` for a number and `"null"` for null. The app's `before_request` hook
(`refuse_loose_json`) converts the same parsed body first with strict=True against the very type Litestar
will use (its signature model's), and a mismatch is a 400 in the one error shape, naming the field. The one
looseness kept is JSON's own: `3.0` is the integer 3 (JSON and JSON Schema make no difference between them).
Every route with a JSON body gets this without doing anything; the document's body schemas come from the same
types through msgspec (appliance/openapi.py), so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import SerializationException

from appliance.errors import BadRequest

logger = logging.getLogger(__name__)

JSON = "application/json"
_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def body_media_type(handler: Any) -> str | None:
    """The media type a route handler parses its `data` from (json, multipart, form), or None without one."""
    signature = getattr(handler, "parsed_fn_signature", None)
    field = signature.parameters.get("data") if signature is not None else None
    if field is None:
        return None
    media_type = getattr(field.kwarg_definition, "media_type", None)
    if media_type == RequestEncodingType.MULTI_PART:
        return "multipart/form-data"
    if media_type == RequestEncodingType.URL_ENCODED:
        return "application/x-www-form-urlencoded"
    return JSON


def body_type(handler: Any) -> Any | None:
    """The type Litestar converts the handler's `data` to (its signature model's field, constraints included)."""
    if body_media_type(handler) is None:
        return None
    for field in msgspec.structs.fields(handler.signature_model):
        if field.name == "data":
            return None if field.type is Any else field.type  # Any: a DTO's body, checked by the DTO
    return None


def json_body_type(handler: Any) -> Any | None:
    return body_type(handler) if body_media_type(handler) == JSON else None


def integral_floats_as_ints(value: Any) -> Any:
    """The parsed JSON with 3.0 written as 3 (JSON's numbers carry no integer type of their own)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_floats_as_ints(item) for item in value]
    return value


def describe(error: msgspec.ValidationError) -> str:
    """msgspec's "Expected `bool`, got `int` - at `$.settings.enabled`" as "settings.enabled: Expected ...".

    The same words Litestar's own validation errors have (server.py's handler formats those)."""
    match = _ERROR.match(str(error))
    message = match.group("message") if match else str(error)
    path = (match.group("path") or "").lstrip(".") if match else ""
    return f"invalid request: {path}: {message}" if path else f"invalid request: {message}"


async def refuse_loose_json(request: Request[Any, Any, Any]) -> None:
    """before_request hook of the app: a JSON body that only lax conversion would take is a 400."""
    handler = request.route_handler
    target = json_body_type(handler)
    if target is None:
        return
    try:
        raw = await request.json()  # cached on the request: the handler's own parsing reuses it
        if raw is None:
            return  # no body: strict and lax agree on null, and Litestar says what is missing
        msgspec.convert(
            integral_floats_as_ints(raw), target, strict=True, dec_hook=handler.default_deserializer
        )
    except SerializationException:
        return  # not JSON at all: Litestar's own parsing answers 400
    except msgspec.ValidationError as exc:
        raise BadRequest(describe(exc)) from None
    except RecursionError:  # [[[[... a few KB deep: no body of this API nests like that
        raise BadRequest("invalid request: the JSON body is nested too deeply") from None
