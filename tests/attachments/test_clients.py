"""A real upload client (@urql/core, whose multipart support is built in) against a real
uvicorn serving the app: the request shape browsers and Node send, not ours."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn

from tests.attachments.conftest import People
from tests.attachments.helpers import Chat, attachment_rows, stored_files

HERE = Path(__file__).parent
SCRIPT = HERE / "clients" / "urql_upload.mjs"
URQL = HERE.parent / "e2e" / "node_modules" / "@urql" / "core" / "dist" / "urql-core.mjs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture
async def base_url(app: Any) -> AsyncIterator[str]:
    """The app (lifespan already running) behind a real uvicorn on a free port."""
    if shutil.which("node") is None or not URQL.exists():
        pytest.skip("node or tests/e2e/node_modules (npm ci in tests/e2e) is missing")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_urql(base_url: str, token: str, conversation: str, *, preflight: bool) -> dict[str, Any]:
    env = {**os.environ, "PARLEY_URL": f"{base_url}/graphql", "PARLEY_TOKEN": token,
           "PARLEY_CONVERSATION": conversation, "PARLEY_PREFLIGHT": "1" if preflight else "0"}
    process = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_urql_uploads_with_the_preflight_header(
    app: Any, base_url: str, people: People, chat: Chat
) -> None:
    result = await run_urql(base_url, people.alice.token, chat.gid, preflight=True)

    upload = result["data"]["uploadAttachment"]
    assert (upload["filename"], upload["contentType"], upload["kind"], upload["size"]) == (
        "notes.txt", "text/plain", "DOCUMENT", len(b"hello from urql\n"))
    assert len(await attachment_rows(app)) == 1


async def test_urql_without_the_header_is_refused_with_400(
    app: Any, base_url: str, people: People, chat: Chat
) -> None:
    before = stored_files(app)

    result = await run_urql(base_url, people.alice.token, chat.gid, preflight=False)

    assert result["data"] is None
    assert result["status"] == 400
    assert result["codes"] == ["BAD_USER_INPUT"]
    assert await attachment_rows(app) == []
    assert stored_files(app) == before
