"""One cattrs converter for both wire dialects: the real panels' and the reference page's.

The panel's JSON is first structured into private wire classes that mirror it field by field
(so a strict converter, used by the tests, can forbid unknown keys and catch drift), then turned
into the public models. Anything that does not fit becomes a ``ResponseValidationError`` that
names the field.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import cattrs
from attrs import define, field
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import make_converter

from ._errors import ResponseValidationError
from ._models import Backup, Page, Server
from ._sansio import parse_checksum

__all__ = ["WireConverter"]

T = TypeVar("T")

#: How many of cattrs' problems a ``ResponseValidationError`` names.
_PROBLEMS_SHOWN = 10


@define
class _BackupAttributes:
    uuid: str
    name: str
    ignored_files: list[str]
    bytes: int
    created_at: datetime
    completed_at: datetime | None
    is_successful: bool | None
    is_locked: bool
    checksum: str | None = None  # real panels: "sha1:<hex>"
    sha256_hash: str | None = None  # the reference page: bare SHA-256 hex
    is_scheduled: bool | None = None  # Pelican only
    reference: bool = field(init=False, default=False)  # set from the keys present


@define
class _BackupItem:
    object: str
    attributes: _BackupAttributes


@define
class _Pagination:
    total: int
    count: int
    per_page: int
    current_page: int
    total_pages: int
    links: Any = None  # {} or {"previous": …, "next": …}; unused


@define
class _ListMeta:
    pagination: _Pagination
    backup_count: int | None = None


@define
class _BackupList:
    object: str
    data: list[_BackupItem]
    meta: _ListMeta


@define
class _ServerAttributes:
    identifier: str
    uuid: str
    name: str
    status: str | None = None


@define
class _ServerItem:
    object: str
    attributes: _ServerAttributes


@define
class _ServerList:
    object: str
    data: list[_ServerItem]
    meta: _ListMeta


@define
class _TokenData:
    token: str
    socket: str


@define
class _WebsocketToken:
    data: _TokenData


@define
class _UrlAttributes:
    url: str


@define
class _SignedUrl:
    object: str
    attributes: _UrlAttributes


def _strict(tp: type[T]) -> Callable[[Any, Any], T]:
    # cattrs would call int("12") or str(5); the panel's types are part of its API.
    def hook(value: Any, _: Any) -> T:
        if isinstance(value, tp) and not (tp is not bool and isinstance(value, bool)):
            return value
        raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")

    return hook


def _structure_datetime(value: Any, _: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {value[:40]!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _structure_str_list(value: Any, _: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"item {index} is {type(item).__name__}, not a string")
    return list(value)


class WireConverter:
    """Turns panel JSON into models; ``strict=True`` forbids unknown keys (for tests)."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        conv = make_converter(forbid_extra_keys=strict)
        for tp in (str, int, bool):
            conv.register_structure_hook(tp, _strict(tp))
        conv.register_structure_hook(datetime, _structure_datetime)
        conv.register_structure_hook_func(lambda tp: tp == list[str], _structure_str_list)
        # Server objects carry dozens of fields this SDK does not model: never strict there.
        conv.register_structure_hook(
            _ServerAttributes,
            make_dict_structure_fn(_ServerAttributes, conv, _cattrs_forbid_extra_keys=False),
        )
        backup_fn = make_dict_structure_fn(
            _BackupAttributes, conv, _cattrs_forbid_extra_keys=strict
        )

        def structure_backup(value: Any, tp: Any) -> _BackupAttributes:
            attributes = backup_fn(value, tp)
            # Which dialect: the reference page sends sha256_hash and no checksum.
            attributes.reference = "sha256_hash" in value and "checksum" not in value
            return attributes

        conv.register_structure_hook(_BackupAttributes, structure_backup)
        self.cattrs = conv

    def _structure(self, data: Any, cls: type[T], what: str) -> T:
        if not isinstance(data, dict):
            raise ResponseValidationError(
                f"{what}: expected a JSON object, got {type(data).__name__}"
            )
        try:
            return self.cattrs.structure(data, cls)
        except cattrs.BaseValidationError as exc:
            raise ResponseValidationError(f"{what}: {_problems_text(exc)}") from exc
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise ResponseValidationError(f"{what}: {exc}") from exc

    @staticmethod
    def decode(body: bytes, what: str) -> Any:
        """Parse a JSON body, or raise ``ResponseValidationError`` saying what came instead."""
        if not body.strip():
            raise ResponseValidationError(f"{what}: the panel sent an empty body")
        try:
            return json.loads(body)
        except RecursionError as exc:
            # json.loads recurses once per level: a deep enough document exhausts the stack.
            start = body[:80].decode("utf-8", "replace")
            raise ResponseValidationError(
                f"{what}: the panel sent JSON nested too deeply to read: {start!r}"
            ) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            start = body[:80].decode("utf-8", "replace")
            raise ResponseValidationError(
                f"{what}: the panel sent something that is not JSON: {start!r}"
            ) from exc

    @staticmethod
    def _check_object(kind: str, expected: str, what: str) -> None:
        if kind != expected:
            raise ResponseValidationError(f"{what}: expected object {expected!r}, got {kind!r}")

    def _backup(self, item: _BackupItem, what: str) -> Backup:
        self._check_object(item.object, "backup", what)
        a = item.attributes
        if a.bytes < 0:
            raise ResponseValidationError(f"{what}: negative size {a.bytes} @ $.attributes.bytes")
        successful: bool | None
        if a.reference:
            raw = a.sha256_hash
            checksum = parse_checksum(raw, bare_algorithm="sha256")
            # The page shows is_successful null while creating and false once failed.
            successful = a.is_successful
        else:
            raw = a.checksum
            checksum = parse_checksum(raw)
            # Real panels keep is_successful false while creating: completed_at tells.
            if a.is_successful:
                successful = True
            else:
                successful = None if a.completed_at is None else False
        return Backup(
            uuid=a.uuid,
            name=a.name,
            ignored_files=tuple(a.ignored_files),
            checksum=checksum,
            checksum_raw=raw,
            bytes=a.bytes,
            created_at=a.created_at,
            completed_at=a.completed_at,
            is_successful=successful,
            is_locked=a.is_locked,
            is_scheduled=a.is_scheduled,
        )

    def backup(self, data: Any, what: str = "backup") -> Backup:
        """``{"object": "backup", "attributes": …}`` → ``Backup``."""
        return self._backup(self._structure(data, _BackupItem, what), what)

    def backup_page(self, data: Any, what: str = "backup list") -> Page[Backup]:
        """A paginated list of backups → ``Page[Backup]``."""
        parsed = self._structure(data, _BackupList, what)
        self._check_object(parsed.object, "list", what)
        items = tuple(self._backup(item, f"{what} item {i}") for i, item in enumerate(parsed.data))
        return _page(items, parsed.meta)

    def server(self, data: Any, what: str = "server") -> Server:
        """``{"object": "server", "attributes": …}`` → ``Server``."""
        item = self._structure(data, _ServerItem, what)
        self._check_object(item.object, "server", what)
        a = item.attributes
        return Server(identifier=a.identifier, uuid=a.uuid, name=a.name, status=a.status)

    def websocket_token(self, data: Any, what: str = "websocket token") -> tuple[str, str]:
        """``{"data": {"token", "socket"}}`` → ``(token, socket URL)``."""
        parsed = self._structure(data, _WebsocketToken, what).data
        parts = urllib.parse.urlsplit(parsed.socket)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ResponseValidationError(f"{what}: not an absolute ws(s) URL @ $.data.socket")
        if not parsed.token:
            raise ResponseValidationError(f"{what}: an empty token @ $.data.token")
        return parsed.token, parsed.socket

    def server_page(self, data: Any, what: str = "server list") -> Page[Server]:
        """A paginated list of servers → ``Page[Server]``."""
        parsed = self._structure(data, _ServerList, what)
        self._check_object(parsed.object, "list", what)
        items = []
        for i, item in enumerate(parsed.data):
            self._check_object(item.object, "server", f"{what} item {i}")
            a = item.attributes
            items.append(Server(identifier=a.identifier, uuid=a.uuid, name=a.name, status=a.status))
        return _page(tuple(items), parsed.meta)

    def signed_url(self, data: Any, what: str = "download link") -> str:
        """``{"object": "signed_url", "attributes": {"url": …}}`` → the URL."""
        parsed = self._structure(data, _SignedUrl, what)
        self._check_object(parsed.object, "signed_url", what)
        url = parsed.attributes.url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ResponseValidationError(f"{what}: not an absolute http(s) URL @ $.attributes.url")
        return url


def _problems_text(exc: cattrs.BaseValidationError) -> str:
    """cattrs' problems, the first few of them, and how many more there were."""
    problems = cattrs.transform_error(exc, path="$")
    text = "; ".join(problems[:_PROBLEMS_SHOWN])
    more = len(problems) - _PROBLEMS_SHOWN
    return text + (f"; … ({more:,} more problems)" if more > 0 else "")


def _page(items: tuple[T, ...], meta: _ListMeta) -> Page[T]:
    p = meta.pagination
    return Page(
        items=items,
        page=p.current_page,
        per_page=p.per_page,
        total=p.total,
        total_pages=p.total_pages,
        backup_count=meta.backup_count,
    )
