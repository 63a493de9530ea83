"""Downloads from a real S3 implementation (moto's server) through presigned URLs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ptero_backups_async import PteroClient
from ptero_backups_async.testing import FakePanel

from .conftest import register_key

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.anyio

CONTENT = os.urandom(5 * 1024 * 1024 + 333)
BUCKET = "backups"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3 = _s3(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="archive.tar.gz", Body=CONTENT)
        yield endpoint
    finally:
        server.stop()


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class DroppingProxy:
    """A TCP proxy that cuts the first ``drops`` connections after ``after`` response bytes."""

    def __init__(self, target_port: int, *, after: int, drops: int) -> None:
        self.target_port = target_port
        self.after = after
        self.drops = drops
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        budget = self.after if self.connections <= self.drops else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            while data := await reader.read(65536):
                self.requests.append(data)
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            sent = 0
            while data := await up_reader.read(65536):
                if budget is not None and sent + len(data) > budget:
                    writer.write(data[: budget - sent])
                    await writer.drain()
                    writer.transport.abort()
                    return
                sent += len(data)
                writer.write(data)
                await writer.drain()

        pump = asyncio.ensure_future(upstream())
        try:
            await downstream()
        except ConnectionError:
            pass
        finally:
            pump.cancel()
            up_writer.close()
            writer.close()


@pytest.fixture
async def panel() -> AsyncIterator[FakePanel]:
    async with FakePanel() as fake:
        register_key(fake.api_key)
        yield fake


def presigner(endpoint: str) -> Callable[[], str]:
    s3 = _s3(endpoint)
    return lambda: s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "archive.tar.gz"}, ExpiresIn=300
    )


async def test_presigned_url_download_is_verified(
    s3_endpoint: str, panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    server = panel.add_server()
    backup = panel.add_backup(server, content=CONTENT)
    backup.link_factory = presigner(s3_endpoint)
    async with PteroClient(panel.url, panel.api_key) as client:
        result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
    assert result.verified
    assert result.attempts == 1
    assert result.checksum.hexdigest == hashlib.sha1(CONTENT).hexdigest()
    assert result.path.read_bytes() == CONTENT


async def test_a_dropped_s3_download_resumes_with_range(
    s3_endpoint: str, panel: FakePanel, tmp_path: pathlib.Path
) -> None:
    moto_port = int(s3_endpoint.rsplit(":", 1)[1])
    async with DroppingProxy(moto_port, after=2 * 1024 * 1024, drops=1) as proxy:
        server = panel.add_server()
        backup = panel.add_backup(server, content=CONTENT)
        backup.link_factory = presigner(f"http://127.0.0.1:{proxy.port}")
        async with PteroClient(panel.url, panel.api_key) as client:
            result = await client.backups(server.identifier).download(backup.uuid, tmp_path)
        sent = b"".join(proxy.requests)
    assert result.path.read_bytes() == CONTENT
    assert result.attempts == 2
    # The second GET asked S3 for the rest only, and the key never went to S3.
    assert b"Range: bytes=" in sent or b"range: bytes=" in sent.lower()
    assert panel.api_key.encode() not in sent
    assert b"authorization" not in sent.lower()
    assert not list(tmp_path.glob("*.part"))
