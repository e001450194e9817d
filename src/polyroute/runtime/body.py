"""Reading request bodies: size limits, JSON decoding, pydantic validation with field paths.

The size limit is enforced twice because either check alone can be dodged: a declared
``Content-Length`` over the limit is refused before a byte is read, and the bytes actually
received are counted (a chunked upload has no length, and a client can lie about it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyroute.runtime.errors import ApiError, render_error

__all__ = ["BodyLimitMiddleware", "field_errors", "invalid", "invalid_field", "read_json", "validate"]

M = TypeVar("M", bound=BaseModel)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body is larger than {limit} bytes", {"maxBodyBytes": limit})


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with a 413, by header and by count."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await render_error(scope, ApiError(400, "bad_request", "invalid Content-Length header"))(
                        scope, receive, send
                    )
                    return
                if declared > self.limit:
                    await render_error(scope, _too_large(self.limit))(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _too_large(self.limit)
            return message

        await self.app(scope, counting_receive, send)


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The decoded JSON body; 400 when it is empty or not JSON (413 comes from the middleware).

    With ``optional``, an empty body reads as ``{}`` (for endpoints whose fields all have defaults).
    """
    body = await request.body()
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the request body is not valid JSON: {exc.msg}", {"position": exc.pos}
        ) from None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "bytes"})


def _is_union_tag(item: str | int) -> bool:
    """Pydantic names the union member that failed (``str``, ``list[...]``, ``ModelRef``) in ``loc``.

    Those are types, not fields, so they are left out of the path a client sees. Field names
    in this API are camelCase identifiers, which never look like a type name.
    """
    return isinstance(item, str) and (item in _TYPE_TAGS or "[" in item or item[:1].isupper())


def field_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"path", "loc", "message", "type"}`` with the request's (camelCase) names."""
    out = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False, include_input=False):
        raw = list(err["loc"])
        last = [raw.pop()] if raw and err["type"] == "extra_forbidden" else []  # a key the client sent
        loc = [*prefix, *(p for p in raw if not _is_union_tag(p)), *last]
        key = (repr(loc), err["msg"])
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "path": ".".join(str(p) for p in loc) or "(body)",
                "loc": loc,
                "message": err["msg"],
                "type": err["type"],
            }
        )
    return out


def invalid(errors: list[dict[str, Any]]) -> ApiError:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError(422, "validation_error", f"{first['path']}: {first['message']}{more}", {"errors": errors})


def invalid_field(path: tuple[str | int, ...], message: str, kind: str = "value_error") -> ApiError:
    return invalid(
        [{"path": ".".join(map(str, path)) or "(body)", "loc": list(path), "message": message, "type": kind}]
    )


def validate(
    model: type[M], data: Any, context: Mapping[str, Any] | None = None, *, prefix: tuple[str | int, ...] = ()
) -> M:
    """``model`` from ``data``, or a 422 listing every problem with its field path."""
    if not isinstance(data, dict):
        raise invalid_field(prefix, f"expected a JSON object, not {_json_type(data)}", "model_type")
    try:
        return model.model_validate(data, context=dict(context) if context else None)
    except ValidationError as exc:
        raise invalid(field_errors(exc, prefix)) from None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__
