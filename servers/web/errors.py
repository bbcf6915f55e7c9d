"""OpenAI's error shape, from genmesh's errors: ``{"error": {"message", "type", "param", "code"}}``.

Ranges are not checked here: the adapter builds the genmesh request and the service validates it
(one source for every limit); its message names genmesh's field (``sampling.max_tokens``), which is
renamed to the OpenAI parameter the caller sent (``max_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping

from genmesh.errors import GenmeshError

# genmesh status -> (HTTP status, OpenAI error type)
_STATUS: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "NOT_FOUND": (404, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "invalid_request_error"),
    "PERMISSION_DENIED": (403, "invalid_request_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "request_cancelled"),
    "DEADLINE_EXCEEDED": (504, "server_error"),
    "UNAVAILABLE": (503, "server_error"),
    "INTERNAL": (500, "server_error"),
}
RETRY_AFTER_SECONDS = "1"
# OpenAIError.body()'s shape, as the OpenAPI document describes it.
ERROR_SCHEMA = {
    "type": "object",
    "description": "OpenAI's error body; `param` names the request parameter at fault.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}


def http_status(code: str) -> int:
    """The HTTP status of a genmesh status name (the same on genmesh's own routes and OpenAI's)."""
    return _STATUS.get(code, (500, ""))[0]  # a full queue or rate limit: worth another try shortly


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(
        self, status: int, message: str, *, type: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {"retry-after": RETRY_AFTER_SECONDS} if self.status in (429, 503) else {}


def invalid(param: str | None, message: str) -> OpenAIError:
    """400 naming ``param``."""
    return OpenAIError(400, message, type="invalid_request_error", param=param, code="invalid_value")


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404, f"The model '{model}' does not exist", type="invalid_request_error", param="model", code="model_not_found"
    )


def param_for(field: str | None, params: Mapping[str, str]) -> str | None:
    """The OpenAI parameter for a genmesh field: an exact entry, else the longest entry that is a
    prefix of it at a path boundary (``messages`` covers ``messages[2].role``), else the field."""
    if not field:
        return None
    if field in params:
        return params[field]
    for prefix in sorted(params, key=len, reverse=True):
        if field.startswith(prefix) and field[len(prefix)] in ".[":
            return params[prefix] + field[len(prefix) :]
    return field


# How a message names a genmesh field that one OpenAI parameter stands for only in part.
LABELS = {"width": "size (width)", "height": "size (height)", "num_frames": "seconds x fps (num_frames)"}


def from_genmesh(error: GenmeshError, params: Mapping[str, str] | None = None) -> OpenAIError:
    """The OpenAI error for a genmesh one, with its field renamed to the caller's parameter."""
    status, kind = _STATUS.get(error.code, (500, "server_error"))
    params = params or {}
    param = param_for(error.field, params)
    message = error.message
    if error.field and param and param != error.field:
        message = message.replace(error.field, LABELS.get(error.field, param), 1)
    code = {
        "INVALID_ARGUMENT": "invalid_value",
        "NOT_FOUND": "model_not_found" if param == "model" else "not_found",
        "RESOURCE_EXHAUSTED": "rate_limit_exceeded",
        "UNAVAILABLE": "service_unavailable",
    }.get(error.code, error.code.lower())
    return OpenAIError(status, message, type=kind, param=param, code=code)
