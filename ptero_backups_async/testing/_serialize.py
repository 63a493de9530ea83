"""Serialization: the JSON documents the fake panel and its link host send, in each dialect.

Dialects: "pterodactyl" and "pelican" (the real panels) and "reference" (the third-party page
of docs/wire.md). Pure functions from models to dicts and bytes; no HTTP, no state changes.
"""

from __future__ import annotations

import json
import math
import uuid as uuid_mod
from collections.abc import Sequence
from typing import Any, TypeVar

from ._models import BackupState, Dialect, FakeBackup, FakeServer
from ._wire import iso, standard_code, standard_detail

__all__ = [
    "backup_json",
    "backup_page",
    "error_code",
    "errors_json",
    "node_backup_completed",
    "paginate",
    "server_json",
    "server_page",
    "signed_url_json",
    "status_error_json",
    "wings_error_body",
]

_T = TypeVar("_T")

# The reference page names some errors differently from the real panels.
_REFERENCE_CODES = {
    "AuthenticationException": "InvalidCredentialsException",
    "AccessDeniedHttpException": "InsufficientPermissionsException",
    "BackupLockedException": "BackupIsLockedException",
    "ServerStateConflictException": "ConflictingServerStateException",
}


def backup_json(backup: FakeBackup, dialect: Dialect, *, creating: bool = False) -> dict[str, Any]:
    """A backup object as `dialect` sends it; `creating` shows it as just started."""
    state: BackupState = "creating" if creating else backup.state
    completed_at = None if state == "creating" else backup.completed_at
    size = len(backup.content) if state == "completed" else 0
    attributes: dict[str, Any]
    if dialect == "reference":
        attributes = {
            "uuid": backup.uuid,
            "name": backup.name,
            "ignored_files": list(backup.ignored_files),
            "sha256_hash": backup.wire_checksum_in(state),
            "bytes": size,
            "created_at": iso(backup.created_at),
            "completed_at": iso(completed_at) if state == "completed" else None,
            "is_successful": None if state == "creating" else state == "completed",
            "is_locked": backup.is_locked,
        }
    else:
        attributes = {
            "uuid": backup.uuid,
            "is_successful": state == "completed",
            "is_locked": backup.is_locked,
            "name": backup.name,
            "ignored_files": list(backup.ignored_files),
            "checksum": backup.wire_checksum_in(state),
            "bytes": size,
            "created_at": iso(backup.created_at),
            "completed_at": iso(completed_at),
        }
        if dialect == "pelican":
            attributes["is_scheduled"] = backup.is_scheduled
    return {"object": "backup", "attributes": attributes}


def server_json(server: FakeServer, internal_id: int) -> dict[str, Any]:
    """A server object (the same in every dialect)."""
    status = server.status
    return {
        "object": "server",
        "attributes": {
            "server_owner": True,
            "identifier": server.identifier,
            "internal_id": internal_id,
            "uuid": server.uuid,
            "name": server.name,
            "node": "Node 1",
            "is_node_under_maintenance": False,
            "sftp_details": {"ip": "127.0.0.1", "port": 2022},
            "description": "",
            "feature_limits": {
                "databases": 0,
                "allocations": 1,
                "backups": server.backup_limit,
            },
            "status": status,
            "is_suspended": status == "suspended",
            "is_installing": status in ("installing", "install_failed"),
            "is_transferring": status == "transferring",
        },
    }


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def paginate(
    items: Sequence[_T],
    *,
    page: str | None,
    per_page: str | None,
    default: int,
    maximum: int,
    path_url: str,
) -> tuple[list[_T], dict[str, Any]]:
    """One page of `items` for the raw `page`/`per_page` query values, and its `pagination`.

    `path_url` is the absolute URL of the route, without query: the base of the page links.
    """
    size = _int_or(per_page, default)
    if size < 1:
        size = default
    size = min(size, maximum)
    number = max(_int_or(page, 1), 1)
    total = len(items)
    total_pages = max(1, math.ceil(total / size))
    chunk = list(items[(number - 1) * size : number * size])
    # Laravel builds these from the bare path plus `page` only: per_page is not kept.
    links: dict[str, str] = {}
    if number > 1:
        links["previous"] = f"{path_url}?page={number - 1}"
    if number < total_pages:
        links["next"] = f"{path_url}?page={number + 1}"
    pagination = {
        "total": total,
        "count": len(chunk),
        "per_page": size,
        "current_page": number,
        "total_pages": total_pages,
        "links": links,
    }
    return chunk, pagination


def server_page(servers: Sequence[tuple[FakeServer, int]], pagination: Any) -> dict[str, Any]:
    """A page of the server list, from (server, internal id) pairs."""
    return {
        "object": "list",
        "data": [server_json(server, internal_id) for server, internal_id in servers],
        "meta": {"pagination": pagination},
    }


def backup_page(
    backups: Sequence[FakeBackup], pagination: Any, dialect: Dialect, backup_count: int
) -> dict[str, Any]:
    """A page of a server's backups; the real panels add `backup_count` to `meta`."""
    meta: dict[str, Any] = {"pagination": pagination}
    if dialect != "reference":
        meta = {"backup_count": backup_count, **meta}
    return {"object": "list", "data": [backup_json(b, dialect) for b in backups], "meta": meta}


def signed_url_json(url: str) -> dict[str, Any]:
    """The download route's answer."""
    return {"object": "signed_url", "attributes": {"url": url}}


def error_code(code: str, dialect: Dialect) -> str:
    """The `code` a real panel uses, as `dialect` names it."""
    return _REFERENCE_CODES.get(code, code) if dialect == "reference" else code


def errors_json(errors: Sequence[dict[str, Any]], dialect: Dialect) -> dict[str, Any]:
    """An error document from real-panel error entries, codes named as in `dialect`."""
    return {"errors": [{**e, "code": error_code(str(e["code"]), dialect)} for e in errors]}


def status_error_json(status: int, dialect: Dialect) -> dict[str, Any]:
    """The error document a panel sends for a bare `status`."""
    error = {
        "code": standard_code(status),
        "status": str(status),
        "detail": standard_detail(status),
    }
    return errors_json([error], dialect)


def wings_error_body(message: str) -> bytes:
    """A Wings error body (Go's encoding/json, with a fresh request id)."""
    return json.dumps({"error": message, "request_id": str(uuid_mod.uuid4())}).encode()


def node_backup_completed(backup: FakeBackup) -> str:
    """`args[0]` of the node's `backup completed` event: the JSON text Wings publishes.

    Wings sends the bare hex digest it computed and `checksum_type`; the panel stores them as
    `<type>:<hex>`, so both are read back from the panel's record here (a GET after the event
    agrees with it). Go marshals a map with its keys sorted.
    """
    if backup.state == "completed":
        raw = backup.wire_checksum_in("completed")
        kind, sep, digest = (raw or "").partition(":")
        if not sep:
            kind, digest = "sha1", raw or ""
        payload: dict[str, Any] = {
            "checksum": digest,
            "checksum_type": kind,
            "file_size": len(backup.content),
            "is_successful": True,
            "uuid": backup.uuid,
        }
    else:
        payload = {
            "checksum": "",
            "checksum_type": "sha1",
            "file_size": 0,
            "is_successful": False,
            "uuid": backup.uuid,
        }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))
