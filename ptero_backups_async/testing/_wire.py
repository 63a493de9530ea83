"""Wire-format helpers of the fake panel: JSON, HTML and XML bodies, ranges, validation."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import html
import io
import json
import random
import re
import tarfile
from datetime import datetime
from email.utils import format_datetime
from typing import Any

__all__ = [
    "ApiError",
    "JwtError",
    "Rule",
    "html_page",
    "http_date",
    "iso",
    "json_bytes",
    "jwt_decode",
    "jwt_encode",
    "make_archive",
    "parse_range",
    "redirect_page",
    "s3_error",
    "standard_code",
    "standard_detail",
    "validate",
]

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}

_STANDARD_CODES = {
    400: "BadRequestHttpException",
    401: "AuthenticationException",
    403: "AccessDeniedHttpException",
    404: "NotFoundHttpException",
    405: "MethodNotAllowedHttpException",
    409: "ServerStateConflictException",
    422: "ValidationException",
    429: "ThrottleRequestsException",  # the API-wide limit; per-server throttles say their own
    500: "HttpException",
    502: "DaemonConnectionException",
    503: "ServiceUnavailableHttpException",
    504: "DaemonConnectionException",
    507: "InsufficientStorageException",
}

_STANDARD_DETAILS = {
    400: "The request could not be processed.",
    401: "Unauthenticated.",
    403: "This action is unauthorized.",
    404: "The requested resource could not be found on the server.",
    405: "The method is not supported for this route.",
    409: "This server is currently in an unsupported state, please try again later.",
    422: "The given data was invalid.",
    429: "Too Many Attempts.",
    500: "An unexpected error was encountered while processing this request, please try again.",
    502: "An error was encountered while processing this request on the daemon.",
    503: "The service is temporarily unavailable.",
    504: "The daemon did not answer in time.",
    507: "Not enough storage space available for backup.",
}


def reason(status: int) -> str:
    """Reason phrase of `status`."""
    return _REASONS.get(status, "Error")


def standard_code(status: int) -> str:
    """The exception class name a real panel uses for a bare `status`."""
    return _STANDARD_CODES.get(status, "HttpException")


def standard_detail(status: int) -> str:
    """A plausible panel message for a bare `status`."""
    return _STANDARD_DETAILS.get(status, reason(status))


class ApiError(Exception):
    """An API error answer; raised by route handlers, rendered by the dispatcher."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors or [{"code": code, "status": str(status), "detail": detail}]


def json_bytes(payload: Any) -> bytes:
    """Encode like PHP's json_encode: ASCII only, slashes escaped."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def iso(value: datetime | None) -> str | None:
    """ISO-8601 with a `+00:00` offset and whole seconds, as Laravel sends dates."""
    return None if value is None else value.replace(microsecond=0).isoformat()


def http_date(value: datetime) -> str:
    """An RFC 7231 date."""
    return format_datetime(value, usegmt=True)


def html_page(status: int, message: str | None = None) -> bytes:
    """A minimal HTML error page, like the ones panels and proxies send."""
    title = f"{status} {reason(status)}"
    text = html.escape(message or reason(status))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{title}</title></head><body><div class="code">{status}</div>'
        f'<div class="message">{text}</div></body></html>\n'
    ).encode()


def redirect_page(url: str) -> bytes:
    """The body Laravel sends with a redirect."""
    u = html.escape(url)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="UTF-8" />'
        f'<meta http-equiv="refresh" content="0;url=\'{u}\'" />'
        f"<title>Redirecting to {u}</title></head>"
        f'<body>Redirecting to <a href="{u}">{u}</a>.</body></html>'
    ).encode()


def s3_error(code: str, message: str, resource: str, request_id: str) -> bytes:
    """An S3 XML error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{html.escape(code)}</Code><Message>{html.escape(message)}</Message>"
        f"<Resource>{html.escape(resource)}</Resource><RequestId>{request_id}</RequestId>"
        "</Error>"
    ).encode()


def make_archive(seed: str, size: int = 4096) -> bytes:
    """A small, deterministic, valid .tar.gz holding `size` pseudo-random bytes."""
    payload = random.Random(seed).randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("world/region.dat")
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), mtime=0)


_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def parse_range(header: str, total: int) -> tuple[int, int] | bool | None:
    """Parse one `Range` header: (first, last) inclusive; None: ignore it; False: unsatisfiable."""
    m = _RANGE_RE.fullmatch(header)
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        first = int(m.group(1))
        if first >= total:
            return False
        last = int(m.group(2)) if m.group(2) else total - 1
        if last < first:
            return None
        return first, min(last, total - 1)
    suffix = int(m.group(2))
    if suffix == 0 or total == 0:
        return False
    return max(0, total - suffix), total - 1


class Rule:
    """Laravel-style validation rules for one field."""

    def __init__(
        self,
        field: str,
        *,
        required: bool = False,
        kind: str | None = None,
        max_len: int | None = None,
    ) -> None:
        self.field = field
        self.required = required
        self.kind = kind
        self.max_len = max_len


def _is_laravel_bool(value: Any) -> bool:
    if value is True or value is False:
        return True
    if type(value) is int and value in (0, 1):
        return True
    return value in ("0", "1")


def to_bool(value: Any) -> bool:
    """Interpret a value that passed the `boolean` rule."""
    return value in (True, 1, "1")


def validate(data: dict[str, Any], rules: list[Rule]) -> None:
    """Raise a 422 ApiError listing every failed rule (empty strings count as null)."""
    errors: list[dict[str, Any]] = []

    def fail(field: str, rule: str, detail: str) -> None:
        errors.append(
            {
                "code": "ValidationException",
                "status": "422",
                "detail": detail,
                "meta": {"source_field": field, "rule": rule},
            }
        )

    for rule in rules:
        value = data.get(rule.field)
        if value == "":
            value = None
        label = rule.field.replace("_", " ")
        if value is None:
            if rule.required:
                fail(rule.field, "required", f"The {label} field is required.")
            continue
        if rule.kind == "string" and not isinstance(value, str):
            fail(rule.field, "string", f"The {label} field must be a string.")
            continue
        if rule.kind == "boolean" and not _is_laravel_bool(value):
            fail(rule.field, "boolean", f"The {label} field must be true or false.")
            continue
        if rule.max_len is not None and isinstance(value, str) and len(value) > rule.max_len:
            fail(
                rule.field,
                "max",
                f"The {label} field must not be greater than {rule.max_len} characters.",
            )
    if errors:
        raise ApiError(422, "ValidationException", errors[0]["detail"], errors=errors)


# JSON Web Tokens, HS256 only: what the panel signs and the node checks (RFC 7519).


class JwtError(Exception):
    """A token the node rejects; the message is the one Wings sends in `jwt error`."""


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hs256(secret: bytes, signing_input: str) -> bytes:
    return hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()


def jwt_encode(
    claims: dict[str, Any], secret: bytes, *, headers: dict[str, Any] | None = None
) -> str:
    """A compact HS256 JWT of `claims` (JSON as the panel's library writes it)."""
    header = {"typ": "JWT", "alg": "HS256", **(headers or {})}
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":"), ensure_ascii=False).encode())
        for part in (header, claims)
    )
    return f"{signing_input}.{_b64url(_hs256(secret, signing_input))}"


def jwt_decode(token: str, secret: bytes) -> dict[str, Any]:
    """The claims of an HS256 `token` signed with `secret`; JwtError otherwise.

    Only the form and the signature are checked here; the times are the node's business.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("jwt: malformed token")
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, binascii.Error, RecursionError):
        raise JwtError("jwt: malformed token") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("jwt: malformed token")
    if header.get("alg") != "HS256":
        raise JwtError("jwt: algorithm mismatch")
    if not hmac.compare_digest(signature, _hs256(secret, f"{parts[0]}.{parts[1]}")):
        raise JwtError("jwt: HMAC verification failed")
    return claims
