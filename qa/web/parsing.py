"""Reading request input: bounded integer query arguments and JSON bodies validated against the
OpenAPI document's schemas (one validation path for every JSON route)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from qa import openapi
from qa.errors import BadRequestError, TooLargeError, UnsupportedMediaError

JSON_BODY_LIMIT = 64 * 1024


def int_arg(name: str, default: int, strict: bool = True) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if re.fullmatch(r"\d{1,3}", raw, flags=re.ASCII) else 0
    if 1 <= value <= openapi.MAX_K:
        return value
    if strict:
        raise BadRequestError(f"{name} must be an integer from 1 to {openapi.MAX_K}; got {raw!r}")
    return default


def limit_body(limit: int) -> None:
    """Refuse a body over ``limit`` bytes, announced or not."""
    if (request.content_length or 0) > limit:
        raise TooLargeError(f"bodies of this route are limited to {limit} bytes")
    request.max_content_length = limit  # also bounds bodies sent without a length


def json_body(schema: str, required: bool = True, limit: int = JSON_BODY_LIMIT) -> dict[str, Any]:
    """The request's JSON object, validated against an OpenAPI component schema."""
    if (request.content_length or 0) > limit:
        raise TooLargeError(f"JSON bodies are limited to {limit} bytes")
    request.max_content_length = limit
    raw = request.get_data(cache=False)
    if not raw and not required:
        return {}
    if not request.is_json:
        raise UnsupportedMediaError(
            f"expected Content-Type: application/json, got {request.mimetype or 'none'!r}")
    try:
        body = json.loads(raw)
    except ValueError as e:  # includes UnicodeDecodeError
        raise BadRequestError(f"request body is not valid JSON: {e}") from e
    except RecursionError as e:
        raise BadRequestError("request body is nested too deeply") from e
    return validated(body, schema)


def validated(body: Any, schema: str) -> dict[str, Any]:
    """``body`` when it matches the named schema, else BadRequestError naming the first fault."""
    errors = sorted(openapi.validator(schema).iter_errors(body), key=lambda err: list(err.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "body"
        raise BadRequestError(f"{where}: {errors[0].message}")
    result: dict[str, Any] = body
    return result
