"""Whatever a panel or link host sends, only ``PteroError``s come out, with bounded messages.

Hostile servers on loopback answer JSON nested thousands of levels deep, thousands of error
entries, megabyte-long details and status lines, and echo the API key: the SDK raises its own
errors, every message stays within ``MAX_MESSAGE`` characters and says how much it left out,
the full data stays on the exception, and no part of the key beyond its mask shows anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
from aiohttp import web

from ptero_backups_async import (
    APIConnectionError,
    APIStatusError,
    DownloadError,
    PteroClient,
    PteroError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    UnprocessableEntityError,
)
from ptero_backups_async._errors import MAX_HISTORY_ENTRY, MAX_MESSAGE
from ptero_backups_async._sansio import MAX_JSON_DEPTH
from ptero_backups_async.testing import FakePanel

from .conftest import register_key
from .faults._tools import serve

pytestmark = pytest.mark.anyio

SERVER = "d3aac109"
BACKUP = "6c1b3c3e-43b0-4a4b-9d9c-3c8d27f2a6d1"
DEPTHS = [500, 950, 5000, 100_000]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def key() -> str:
    return register_key(f"ptlc_{secrets.token_hex(20)}")


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """A factory: serve one handler for every path on loopback → its base URL."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(handler: Handler) -> str:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            return await stack.enter_async_context(serve(app))

        yield start


def answer(status: int, body: str, **kwargs: Any) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, text=body, content_type="application/json", **kwargs)

    return handler


def deep_object(depth: int, leaf: str) -> str:
    return '{"a":' * depth + leaf + "}" * depth


def deep_list(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


def texts_of(exc: BaseException) -> list[str]:
    """Everything an error shows: str, repr and args of it and its causes, and its details."""
    out: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        out += [str(current), repr(current), *map(str, current.args)]
        if isinstance(current, APIStatusError):
            out += [str(current.detail), repr(current.errors), current.url, repr(current.headers)]
            out += [json.dumps(attrs.asdict(d)) for d in current.errors]  # as a CLI would
        if isinstance(current, DownloadError):
            out += list(current.history)
        current = current.__cause__ or current.__context__
    return out


def assert_no_part_of_the_key(key: str, texts: list[str]) -> None:
    """Not the key, nor any 8 characters of its secret part (a cut may split a key)."""
    secret = key[len("ptlc_") : -4]
    chunks = [secret[i : i + 8] for i in range(len(secret) - 7)]
    leaks = [t for t in texts for chunk in chunks if chunk in t]
    assert not leaks, f"part of the key shows in {leaks[0][:300]!r}"


def assert_bounded(exc: BaseException) -> None:
    assert len(str(exc)) <= MAX_MESSAGE
    assert all(len(arg) <= MAX_MESSAGE for arg in exc.args)


def json_depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


async def call(client: PteroClient, what: str) -> object:
    b = client.backups(SERVER)
    if what == "get":
        return await b.get(BACKUP)
    if what == "list_page":
        return await b.list_page()
    if what == "servers_page":
        return await client.servers_page()
    assert what == "create"
    return await b.create(name="nightly")


# ------------------------------------------------------------------------ deep nesting


def _error_bodies(depth: int, key: str) -> dict[str, str]:
    leaf = json.dumps(f"echo {key}")
    entry = (
        '{"code":"ValidationException","status":"422",'
        f'"detail":"The name is bad: {key}",'
        f'"meta":{{"source_field":"name","echo":"{key}","deep":{deep_object(depth, leaf)}}}}}'
    )
    plain = f'{{"code":"ValidationException","status":"422","detail":"bad {key}"}}'
    return {
        "meta": f'{{"errors":[{entry}]}}',
        "entry": f'{{"errors":[{deep_list(depth, leaf)},{plain}]}}',
        "detail": (
            '{"errors":[{"code":"ValidationException","status":"422",'
            f'"detail":{deep_object(depth, leaf)}}}]}}'
        ),
        "sibling": f'{{"errors":[{plain}],"debug":{deep_object(depth, leaf)}}}',
    }


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", ["meta", "entry", "detail", "sibling"])
@pytest.mark.parametrize(
    ("status", "cls"),
    [(422, UnprocessableEntityError), (429, RateLimitError), (500, ServerError)],
)
async def test_deeply_nested_error_bodies_are_status_errors_without_the_key(
    hostile: Callable[[Handler], Awaitable[str]],
    key: str,
    depth: int,
    shape: str,
    status: int,
    cls: type[APIStatusError],
) -> None:
    url = await hostile(answer(status, _error_bodies(depth, key)[shape]))
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(cls) as caught:
            await client.backups(SERVER).create(name="nightly")
    error = caught.value
    assert_no_part_of_the_key(key, texts_of(error))
    assert_bounded(error)
    for detail in error.errors:
        assert json_depth(detail.meta) <= MAX_JSON_DEPTH
    if shape == "meta" and depth < 1000 and error.errors:
        meta = error.errors[0].meta
        assert meta is not None
        assert meta["source_field"] == "name"
        assert "cut" in json.dumps(meta, ensure_ascii=False)


async def test_a_422_meta_nested_500_levels_keeps_its_shallow_part(
    hostile: Callable[[Handler], Awaitable[str]], key: str
) -> None:
    url = await hostile(answer(422, _error_bodies(500, key)["meta"]))
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(UnprocessableEntityError) as caught:
            await client.backups(SERVER).create(name="nightly")
    [detail] = caught.value.errors
    assert detail.code == "ValidationException"
    assert detail.meta is not None
    assert detail.meta["source_field"] == "name"
    assert detail.meta["echo"].startswith("ptlc_…")
    assert json_depth(detail.meta) == MAX_JSON_DEPTH
    assert "The name is bad: ptlc_…" in str(caught.value)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("what", ["get", "list_page", "servers_page", "create"])
@pytest.mark.parametrize("nest", [deep_object, deep_list])
async def test_deeply_nested_2xx_bodies_are_response_validation_errors(
    hostile: Callable[[Handler], Awaitable[str]],
    key: str,
    depth: int,
    what: str,
    nest: Callable[[int, str], str],
) -> None:
    url = await hostile(answer(200, nest(depth, json.dumps(key))))
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(ResponseValidationError) as caught:
            await call(client, what)
    assert_no_part_of_the_key(key, texts_of(caught.value))
    assert_bounded(caught.value)


# ------------------------------------------------------------------------ sizes


async def test_ten_thousand_errors_make_a_bounded_message_and_stay_on_the_exception(
    hostile: Callable[[Handler], Awaitable[str]], key: str
) -> None:
    errors = [
        {
            "code": "ValidationException",
            "status": "422",
            "detail": f"The field f{i} is required ({key}).",
            "meta": {"source_field": f"f{i}", "rule": "required"},
        }
        for i in range(10_000)
    ]
    url = await hostile(answer(422, json.dumps({"errors": errors})))
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(UnprocessableEntityError) as caught:
            await client.backups(SERVER).create(name="nightly")
    error = caught.value
    assert_bounded(error)
    assert "(9,995 more errors)" in str(error)
    assert "The field f0 is required" in str(error)
    assert error.detail is not None
    assert len(error.detail) <= MAX_MESSAGE
    assert len(error.errors) == 10_000
    assert error.errors[-1].detail is not None
    assert error.errors[-1].detail.startswith("The field f9999 is required (ptlc_…")
    assert_no_part_of_the_key(key, texts_of(error))


@pytest.mark.parametrize("field", ["detail", "code"])
async def test_a_megabyte_detail_or_code_is_cut_and_says_how_much(
    hostile: Callable[[Handler], Awaitable[str]], key: str, field: str
) -> None:
    entry = {"code": "ValidationException", "status": "422", "detail": "bad"}
    entry[field] = f"{key} " + "x" * 1_000_000 + f" {key}"
    url = await hostile(answer(422, json.dumps({"errors": [entry]})))
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(UnprocessableEntityError) as caught:
            await client.backups(SERVER).list_page()
    assert_bounded(caught.value)
    assert "characters cut]" in str(caught.value)
    assert str(caught.value).endswith(f"(GET {caught.value.url})")
    assert_no_part_of_the_key(key, texts_of(caught.value))


async def test_the_key_is_masked_before_a_message_is_cut_wherever_the_cut_falls(
    hostile: Callable[[Handler], Awaitable[str]], key: str
) -> None:
    # A long detail is cut near its start; put the echoed key at every position around there.
    offset = 0

    async def handler(request: web.Request) -> web.Response:
        detail = "a" * offset + key + "b" * 1000
        return web.json_response(
            {"errors": [{"code": "X", "status": "422", "detail": detail}]}, status=422
        )

    url = await hostile(handler)
    async with PteroClient(url, key, max_retries=0) as client:
        for offset in range(150, 400):  # noqa: B007 - read by the handler
            with pytest.raises(UnprocessableEntityError) as caught:
                await client.backups(SERVER).list_page()
            assert "characters cut]" in str(caught.value)
            assert_no_part_of_the_key(key, texts_of(caught.value))


async def test_a_long_redirect_location_is_cut_after_the_key_is_masked(
    hostile: Callable[[Handler], Awaitable[str]], key: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        location = "http://elsewhere.example/" + "a" * 300 + key + "b" * 7000
        return web.Response(status=302, headers={"Location": location})

    url = await hostile(handler)
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(ResponseValidationError) as caught:
            await client.backups(SERVER).list_page()
    assert_bounded(caught.value)
    assert "characters cut]" in str(caught.value)
    assert_no_part_of_the_key(key, texts_of(caught.value))


async def test_ten_thousand_bad_items_in_a_listing_make_a_bounded_message(
    hostile: Callable[[Handler], Awaitable[str]], key: str
) -> None:
    body = {
        "object": "list",
        "data": [{"object": "backup", "attributes": {"uuid": key}} for _ in range(10_000)],
        "meta": {"pagination": {}},
    }
    url = await hostile(answer(200, json.dumps(body)))
    async with PteroClient(url, key, max_retries=0) as client:
        with pytest.raises(ResponseValidationError) as caught:
            await client.backups(SERVER).list_page()
    assert_bounded(caught.value)
    assert "more problems)" in str(caught.value)
    assert_no_part_of_the_key(key, texts_of(caught.value))


@contextlib.asynccontextmanager
async def raw_status_line(reason: bytes) -> AsyncIterator[str]:
    """A TCP server answering every request with ``HTTP/1.1 503 <reason>``, whatever its size
    (aiohttp.web would not send a status line this long)."""

    async def answer_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 503 " + reason + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_raw, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_256_kib_status_line_from_the_panel_is_a_bounded_connection_error(
    key: str,
) -> None:
    async with raw_status_line(b"x" * 256 * 1024) as url:
        async with PteroClient(url, key, max_retries=0) as client:
            with pytest.raises(APIConnectionError) as caught:
                await client.backups(SERVER).list_page()
    assert_bounded(caught.value)


async def test_a_256_kib_status_line_from_the_link_host_is_a_bounded_download_error(
    panel: FakePanel, client: PteroClient, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"x" * 1000)
    async with raw_status_line(b"x" * 256 * 1024) as url:
        backup.link_factory = lambda: url + "/file"
        with pytest.raises(DownloadError) as caught:
            await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=3)
    assert_bounded(caught.value)
    assert len(caught.value.history) == 3
    assert all(len(entry) <= MAX_HISTORY_ENTRY for entry in caught.value.history)


async def test_fifty_attempts_with_an_8000_character_reason_make_a_bounded_download_error(
    panel: FakePanel,
    client: PteroClient,
    hostile: Callable[[Handler], Awaitable[str]],
    tmp_path: pathlib.Path,
) -> None:
    async def link(request: web.Request) -> web.Response:
        return web.Response(status=503, reason="y" * 8000, headers={"Retry-After": "0"})

    link_url = await hostile(link)
    server = panel.add_server()
    backup = panel.add_backup(server, content=b"x" * 1000)
    backup.link_factory = lambda: link_url + "/file"
    with pytest.raises(DownloadError) as caught:
        await client.backups(server.identifier).download(backup.uuid, tmp_path, max_attempts=50)
    error = caught.value
    assert_bounded(error)
    assert "(45 more attempts)" in str(error)
    assert "attempt 1: the link host answered 503" in str(error)
    assert "attempt 50: the link host answered 503" in str(error)
    assert len(error.history) == 50
    assert all(len(entry) <= MAX_HISTORY_ENTRY for entry in error.history)
    assert all("characters cut]" in entry for entry in error.history)


def test_every_error_class_bounds_its_message() -> None:
    huge = "z" * 300_000
    errors: list[PteroError] = [
        PteroError(huge),
        APIConnectionError(huge),
        UnprocessableEntityError(huge, status=422),
        RateLimitError(huge, status=429, retry_after=1.0),
        ResponseValidationError(huge),
        DownloadError(huge, attempts=2, history=(huge, huge)),
    ]
    for error in errors:
        assert_bounded(error)
        assert "characters cut]" in str(error)
