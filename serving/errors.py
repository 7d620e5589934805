"""Errors of the serving layer.

Two families live here, on purpose kept apart:

* `ApiError` is a per-request status, the equivalent of TF Serving's `absl::Status`: a canonical code plus a
  message. The REST layer turns it into `{"error": message}` with the HTTP status TF Serving maps that code to.
  It is not a `DxpipeError`: it never reaches a command-line user.
* `ServingError` (a `DxpipeError`) is what `dxpipe serve` / `dxpipe predict` report to a person: a bad flag, an
  unreadable model config, an unreachable server. The CLI prints it as one line.
"""

from __future__ import annotations

import enum

from schemas.errors import DxpipeError


class Code(enum.IntEnum):
    """Canonical status codes (`tensorflow/core/protobuf/error_codes.proto`), as TF Serving uses them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's `ToHTTPStatusCode` (model_servers/http_server.cc).
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INTERNAL: 500,
    Code.DATA_LOSS: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.UNAUTHENTICATED: 401,
}


class ApiError(Exception):
    """A request failed with a canonical status code; rendered as `{"error": message}`.

    Attributes:
        code: The canonical code, which fixes the HTTP status.
        message: The message, exactly as the client sees it.
    """

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving answers this code with."""
        return HTTP_STATUS[self.code]

    def status_string(self) -> str:
        """`absl::Status::ToString()`: `INVALID_ARGUMENT: message`, used when an error wraps another."""
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> ApiError:
    """Shorthand for the most common client error (HTTP 400)."""
    return ApiError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ApiError:
    """Shorthand for an unknown model or version (HTTP 404)."""
    return ApiError(Code.NOT_FOUND, message)


class ServingError(DxpipeError):
    """A serving command cannot do what was asked: the message says which input is wrong and how to fix it."""


class ModelConfigError(ServingError):
    """A `models.config` file or the equivalent flags are invalid."""


class ServingClientError(ServingError):
    """A TF Serving endpoint answered with an error, or could not be reached.

    Attributes:
        status: The HTTP status, or None when no answer came back.
        message: The server's `error` text, or why the request failed.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
