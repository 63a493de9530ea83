"""The sans-I/O core: pure functions that build requests and decode what the panel says.

Nothing here touches the network or the event loop; the transport is a thin shell around it.
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ._errors import (
    APIStatusError,
    InvalidArgumentError,
    RateLimitError,
    bound_text,
    status_error_class,
)
from ._models import Backup, Checksum, ErrorDetail, RateLimit

__all__ = [
    "DIGEST_SIZES",
    "MAX_JSON_DEPTH",
    "api_headers",
    "bound_text",
    "check_api_key",
    "check_backup_uuid",
    "check_name",
    "check_server_id",
    "encode_ignored",
    "is_loopback_host",
    "join_url",
    "mask_key",
    "normalize_panel_url",
    "parse_checksum",
    "parse_error",
    "parse_error_details",
    "parse_rate_limit",
    "parse_retry_after",
    "redact",
    "redact_json",
]

#: Hex digits of each digest the SDK can verify.
DIGEST_SIZES: Mapping[str, int] = {
    "md5": 32,
    "sha1": 40,
    "sha224": 56,
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
}

_SHORT_ID = re.compile(r"[0-9a-fA-F]{8}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_SNIPPET = 120
#: How much of an error body's ``meta`` (and of any JSON the SDK keeps from an error) is kept:
#: deeper containers are replaced by ``_TOO_DEEP``. Real panels nest two levels.
MAX_JSON_DEPTH = 32
_TOO_DEEP = f"… (nested deeper than {MAX_JSON_DEPTH} levels; cut)"
#: How many of the panel's ``errors`` an error message quotes, and how much of each.
_DETAILS_SHOWN = 5
_DETAIL_LIMIT = 400
# Bidirectional overrides and zero-width characters: printable, yet they hide what a URL says.
_BIDI = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def mask_key(key: str) -> str:
    """``ptlc_abc…wxyz`` → ``ptlc_…wxyz``: at most the prefix up to ``_`` and the last 4."""
    prefix, sep, rest = key.partition("_")
    if not sep or len(prefix) > 8:
        prefix, rest = "", key
    else:
        prefix += sep
    tail = rest[-4:] if len(rest) >= 16 else ""
    return f"{prefix}…{tail}"


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by its mask."""
    if secret and secret in text:
        return text.replace(secret, mask_key(secret))
    return text


def redact_json(value: Any, secret: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A copy of parsed JSON with ``secret`` masked in every string (keys too), and every
    container nested deeper than ``max_depth`` replaced by a marker.

    Iterative: a panel can nest its JSON as deep as the parser allows, and a recursive walk
    would hit Python's recursion limit long before that.
    """
    holder: list[Any] = [None]
    # (value to copy, container receiving the copy, index or key in it, depth of the value)
    stack: list[tuple[Any, Any, Any, int]] = [(value, holder, 0, 1)]
    while stack:
        item, target, slot, depth = stack.pop()
        if isinstance(item, (dict, list)) and depth > max_depth:
            target[slot] = _TOO_DEEP
        elif isinstance(item, dict):
            copy: dict[Any, Any] = {}
            for key, child in item.items():
                new_key = redact(key, secret) if isinstance(key, str) else key
                copy[new_key] = None  # the slot, in the original order
                stack.append((child, copy, new_key, depth + 1))
            target[slot] = copy
        elif isinstance(item, list):
            items: list[Any] = [None] * len(item)
            stack.extend((child, items, i, depth + 1) for i, child in enumerate(item))
            target[slot] = items
        elif isinstance(item, str):
            target[slot] = redact(item, secret)
        else:
            target[slot] = item
    return holder[0]


def _snippet(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else ""))


def check_server_id(server: object) -> str:
    """Return ``server`` if it is an 8-character short id or a UUID; raise otherwise."""
    if isinstance(server, str) and (_SHORT_ID.fullmatch(server) or _UUID.fullmatch(server)):
        return server
    raise InvalidArgumentError(
        f"invalid server id {_snippet(server)}: expected the 8-character short id "
        "(e.g. 'd3aac109') or the server's UUID"
    )


def check_backup_uuid(uuid: object) -> str:
    """Return ``uuid`` if it is a UUID; raise otherwise."""
    if isinstance(uuid, str) and _UUID.fullmatch(uuid):
        return uuid
    raise InvalidArgumentError(f"invalid backup UUID {_snippet(uuid)}")


def backup_uuid(backup_or_uuid: Backup | str) -> str:
    """The UUID of a ``Backup`` or a UUID string, validated."""
    if isinstance(backup_or_uuid, Backup):
        return check_backup_uuid(backup_or_uuid.uuid)
    return check_backup_uuid(backup_or_uuid)


def check_int(name: str, value: object, *, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) of at least ``minimum``; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer ≥ {minimum}, not {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer ≥ {minimum}, not {value!r}")
    return value


def check_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` if it is a finite number > 0 (or ≥ 0); raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name} must be a number, not {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value != value or value == float("inf"):
        raise InvalidArgumentError(f"{name} must be {'≥ 0' if allow_zero else '> 0'}: {value!r}")
    return float(value)


def normalize_panel_url(url: object) -> str:
    """The panel's base URL without a trailing slash; its path prefix is kept."""
    if not isinstance(url, str):
        raise InvalidArgumentError(f"panel_url must be a string, not {type(url).__name__}")
    url = url.strip()
    # urlsplit silently drops CR, LF and TAB; refuse them (and anything else unprintable or
    # blank) instead of guessing what was meant.
    if not url.isprintable() or any(c.isspace() for c in url) or _BIDI.search(url):
        raise InvalidArgumentError(
            f"invalid panel_url {_snippet(url)}: whitespace or control characters"
        )
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise InvalidArgumentError(f"invalid panel_url {_snippet(url)}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgumentError(
            f"invalid panel_url {_snippet(url)}: expected http(s)://host[:port][/prefix]"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidArgumentError(
            f"invalid panel_url {_snippet(url)}: no query, fragment or credentials allowed"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/api/client"):
        path = path[: -len("/api/client")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def is_loopback_host(url: str) -> bool:
    """True when ``url``'s host is ``localhost`` or a loopback address."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def join_url(base: str, path: str) -> str:
    """``base`` + ``path``, keeping any path prefix of ``base`` (urljoin would drop it)."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def api_headers(api_key: str, *, has_body: bool) -> dict[str, str]:
    """The headers of every panel API request."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    if has_body:
        headers["Content-Type"] = "application/json"
    return headers


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds from either form (delta-seconds or HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if not value.isascii():
        return None
    if value.isdigit() or (value[:1] in "+-" and value[1:].isdigit()):
        return float(max(0, int(value)))
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    try:
        return max(0.0, (when - now).total_seconds())
    except OverflowError:  # pragma: no cover - dates beyond datetime's range
        return None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """``X-RateLimit-*`` headers → ``RateLimit``; None when the panel sent none."""
    limit = _header_int(headers, "X-RateLimit-Limit")
    remaining = _header_int(headers, "X-RateLimit-Remaining")
    if limit is None or remaining is None:
        return None
    reset = _header_int(headers, "X-RateLimit-Reset")
    reset_at = None
    if reset is not None:
        try:
            reset_at = datetime.fromtimestamp(reset, timezone.utc)
        except (OverflowError, OSError, ValueError):
            reset_at = None
    return RateLimit(limit=limit, remaining=remaining, reset_at=reset_at)


def parse_checksum(raw: object, *, bare_algorithm: str | None = None) -> Checksum | None:
    """``"sha1:<hex>"`` → ``Checksum``; bare hex takes ``bare_algorithm``; None if malformed."""
    if not isinstance(raw, str):
        return None
    algorithm, sep, digest = raw.strip().partition(":")
    if not sep:
        if bare_algorithm is None:
            return None
        algorithm, digest = bare_algorithm, algorithm
    algorithm = algorithm.lower()
    size = DIGEST_SIZES.get(algorithm)
    if size is None or len(digest) != size or not _HEX.fullmatch(digest):
        return None
    return Checksum(algorithm=algorithm, hexdigest=digest.lower())


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _load_json(body: bytes) -> tuple[Any, str | None]:
    """The parsed body, or None and why it could not be parsed."""
    try:
        return json.loads(body), None
    except RecursionError:
        # json.loads recurses once per level: a deep enough document exhausts the stack.
        return None, "JSON nested too deeply to read"
    except (ValueError, UnicodeDecodeError):
        return None, None


def _error_details(data: Any, secret: str) -> tuple[ErrorDetail, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return ()
    details = []
    for entry in data["errors"]:
        if not isinstance(entry, dict):
            continue
        meta = entry.get("meta")
        code = _as_str(entry.get("code"))
        detail = _as_str(entry.get("detail"))
        details.append(
            ErrorDetail(
                code=redact(code, secret) if code is not None else None,
                status=_as_int(entry.get("status")),
                detail=redact(detail, secret) if detail is not None else None,
                meta=redact_json(meta, secret) if isinstance(meta, dict) else None,
            )
        )
    return tuple(details)


def parse_error_details(body: bytes, *, secret: str = "") -> tuple[ErrorDetail, ...]:
    """The ``errors`` list of a panel error body; empty when the body is not that JSON.

    Each ``meta`` is copied with containers deeper than ``MAX_JSON_DEPTH`` replaced by a
    marker, so nothing downstream (repr, JSON output, redaction) meets unbounded nesting;
    ``secret`` is masked in every string.
    """
    return _error_details(_load_json(body)[0], secret)


def _detail_text(detail: ErrorDetail) -> str:
    text = detail.detail or ""
    field = detail.meta.get("source_field") if detail.meta else None
    return f"{text} ({field})" if isinstance(field, str) and field not in text else text


def _details_text(details: tuple[ErrorDetail, ...]) -> str:
    """The first few details, each bounded, and how many more the panel sent."""
    shown = details[:_DETAILS_SHOWN]
    text = "; ".join(bound_text(_detail_text(d), _DETAIL_LIMIT) for d in shown if d.detail)
    more = len(details) - len(shown)
    if more:
        text += f"{'; ' if text else ''}… ({more:,} more error{'s' if more != 1 else ''})"
    return text


def _describe_body(
    headers: Mapping[str, str], body: bytes, problem: str | None, secret: str
) -> str:
    content_type = redact(headers.get("Content-Type", "no Content-Type"), secret)
    content_type = bound_text(content_type, _SNIPPET)
    if not body:
        return f"an empty body ({content_type})"
    text = body[:_SNIPPET].decode("utf-8", "replace")
    return f"{problem or 'a non-API body'} ({content_type}): {_snippet(text)}"


def parse_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str = "",
    url: str = "",
    secret: str = "",
) -> APIStatusError:
    """A non-2xx answer → the matching ``APIStatusError`` (by status, refined by ``code``).

    ``secret`` (the API key) is masked in everything taken from the answer *before* the
    message is made and bounded, so that a cut can never leave part of it behind.
    """
    if secret:
        body = body.replace(secret.encode(), mask_key(secret).encode())
    data, problem = _load_json(body)
    details = _error_details(data, secret)
    first = details[0] if details else None
    code = first.code if first else None
    if first is not None:
        detail = _details_text(details)
    else:
        detail = f"the panel sent {_describe_body(headers, body, problem, secret)}"
    cls = status_error_class(status, code)
    shown_code = f" {bound_text(code, _SNIPPET)}" if code else ""
    message = f"{status}{shown_code}: {detail or 'no detail'} ({method} {url})"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "detail": detail,
        "errors": details,
        "method": method,
        "url": url,
        # Looked up above in the caller's (case-insensitive) mapping; kept with the key masked.
        "headers": {name: redact(value, secret) for name, value in headers.items()},
    }
    if issubclass(cls, RateLimitError):
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if retry_after is not None:
            message += f"; retry after {retry_after:g} s"
        return cls(message, retry_after=retry_after, **kwargs)
    return cls(message, **kwargs)


def encode_ignored(ignored: Sequence[str] | str | None) -> str | None:
    """Patterns to exclude → the one ``\\n``-separated string the panel expects."""
    if ignored is None:
        return None
    if isinstance(ignored, str):
        patterns = ignored.replace("\r\n", "\n").split("\n")
    else:
        patterns = []
        for pattern in ignored:
            if not isinstance(pattern, str):
                raise InvalidArgumentError(f"ignored pattern {_snippet(pattern)} is not a string")
            if "\n" in pattern or "\r" in pattern:
                raise InvalidArgumentError(
                    f"ignored pattern {_snippet(pattern)} contains a line break; "
                    "pass each pattern as its own item"
                )
            patterns.append(pattern)
    cleaned = [p.strip() for p in patterns if p.strip()]
    for pattern in cleaned:
        if "\x00" in pattern or not pattern.isprintable():
            raise InvalidArgumentError(
                f"ignored pattern {_snippet(pattern)} has control characters"
            )
    return "\n".join(cleaned)


def check_name(name: object, *, what: str = "backup name", max_length: int = 255) -> str:
    """Return ``name`` if it is a printable string of acceptable length; raise otherwise."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(name).__name__}")
    if len(name) > max_length:
        raise InvalidArgumentError(f"{what} is {len(name)} characters long; at most {max_length}")
    if not name.isprintable():
        raise InvalidArgumentError(f"{what} {_snippet(name)} has control characters")
    return name


def check_api_key(key: object) -> str:
    """Return ``key`` if it can be sent in a header; raise (without echoing it) otherwise."""
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError("api_key must be a non-empty string")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise InvalidArgumentError("api_key has whitespace, control or non-ASCII characters")
    return key


# ---------------------------------------------------------------- the node's websocket


def origin_of(panel_url: str) -> str:
    """The ``Origin`` the node expects: ``scheme://host``, plus ``:port`` only when the URL
    names one; no path, no trailing slash."""
    parts = urllib.parse.urlsplit(panel_url)
    host = parts.netloc.rpartition("@")[2].lower()
    return f"{parts.scheme.lower()}://{host}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, read without checking its signature (the node checks it).

    Used only to learn what the token allows and when it expires; ``{}`` when unreadable.
    """
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def may_read_backups(claims: Mapping[str, Any]) -> bool:
    """Whether a token with these claims receives ``backup completed`` events."""
    permissions = claims.get("permissions")
    if not isinstance(permissions, list):
        return True  # nothing said: assume the node will send them, and keep a safety poll
    return "*" in permissions or "backup.read" in permissions


def parse_node_frame(text: str) -> tuple[str, tuple[str, ...]] | None:
    """``{"event": str, "args": [str, …]}`` → ``(event, args)``; None for anything else."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    args = data.get("args") or []
    if not isinstance(args, list):
        return None
    return data["event"], tuple(a if isinstance(a, str) else json.dumps(a) for a in args)


def parse_backup_completed(
    args: Sequence[str],
) -> tuple[str, bool, Checksum | None, int] | None:
    """The payload of ``backup completed`` (a JSON *string* in ``args[0]``) → ``(uuid,
    is_successful, checksum, bytes)``; None when it is not that."""
    if not args:
        return None
    try:
        data = json.loads(args[0])
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    uuid, ok = data.get("uuid"), data.get("is_successful")
    if not isinstance(uuid, str) or not _UUID.fullmatch(uuid) or not isinstance(ok, bool):
        return None
    raw = data.get("checksum")
    algorithm = data.get("checksum_type") if isinstance(data.get("checksum_type"), str) else "sha1"
    checksum = None
    if isinstance(raw, str) and raw:
        checksum = parse_checksum(raw if ":" in raw else f"{algorithm}:{raw}")
    size = _as_int(data.get("file_size"))
    return uuid.lower(), ok, checksum, size if size is not None and size >= 0 else 0
