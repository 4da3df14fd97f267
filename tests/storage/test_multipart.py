"""storage.multipart through a real Starlette app (httpx.ASGITransport) and directly."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from strawberry.file_uploads import Upload

from errors import AppError, BadUserInput, PayloadTooLarge
from storage.multipart import MultipartLimits, UploadedFile, asgi_body, parse_graphql_multipart, parse_request

BOUNDARY = "----parley-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
UPLOAD = "mutation($c: ID!, $file: Upload!) { uploadAttachment(conversationId: $c, file: $file) { id } }"
LIMITS = MultipartLimits(max_file_bytes=1000, max_files=1, max_parts=3, max_field_bytes=2000)


def part(name: str, data: bytes | str, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    body = data.encode() if isinstance(data, str) else data
    return head.encode() + b"\r\n" + body + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def operations(**variables: Any) -> str:
    return json.dumps({"query": UPLOAD, "variables": {"c": "conv-1", "file": None, **variables}})


def upload_body(file_data: bytes, *, filename: str = "photo.png", mapping: Any = None, ops: str | None = None) -> bytes:
    return body(
        part("operations", ops or operations()),
        part("map", json.dumps(mapping if mapping is not None else {"0": ["variables.file"]})),
        part("0", file_data, filename, "image/png"),
    )


def describe(value: Any) -> Any:
    if isinstance(value, UploadedFile):
        return {"$upload": value.field_name}
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [describe(v) for v in value]
    return value


def make_app(tmp_dir: Path, limits: MultipartLimits) -> Starlette:
    """What the server does: parse before GraphQL, refuse with 413/400, clean up after."""

    async def graphql(request: Request) -> JSONResponse:
        try:
            parsed = await parse_request(request, tmp_dir=tmp_dir, limits=limits)
        except AppError as exc:
            status = 413 if isinstance(exc, PayloadTooLarge) else 400
            return JSONResponse({"errors": [{"message": exc.message, "extensions": exc.extensions}]}, status)
        async with parsed:
            files = {
                name: {
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "size": f.size,
                    "sha256": f.sha256,
                    "read_sha256": hashlib.sha256(b"".join([c async for c in f.chunks()])).hexdigest(),
                    "in_tmp_dir": f.path.parent == tmp_dir,
                }
                for name, f in parsed.files.items()
            }
            return JSONResponse({"operations": describe(parsed.operations), "files": files})

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])])


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path / "uploads-tmp"


def exists(path: Path) -> bool:
    return path.exists()


def leftovers(tmp_dir: Path) -> list[str]:
    return sorted(p.name for p in tmp_dir.iterdir()) if tmp_dir.exists() else []


async def post(
    tmp_dir: Path, content: bytes, limits: MultipartLimits = LIMITS, content_type: str = CONTENT_TYPE
) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_app(tmp_dir, limits))
    async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as client:
        return await client.post(
            "/graphql", content=content, headers={"content-type": content_type, "apollo-require-preflight": "true"}
        )


def error_of(response: httpx.Response) -> dict[str, Any]:
    extensions: dict[str, Any] = response.json()["errors"][0]["extensions"]
    return extensions


@pytest.mark.asyncio
async def test_a_file_exactly_at_the_limit_is_accepted(tmp_dir: Path) -> None:
    data = bytes(range(256)) * 3 + b"x" * 232  # 1000 bytes, every byte value, CR/LF included
    assert len(data) == LIMITS.max_file_bytes

    response = await post(tmp_dir, upload_body(data, filename="../../etc/passwd"))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "operations": {"query": UPLOAD, "variables": {"c": "conv-1", "file": {"$upload": "0"}}},
        "files": {
            "0": {
                "filename": "passwd",
                "content_type": "image/png",
                "size": 1000,
                "sha256": hashlib.sha256(data).hexdigest(),
                "read_sha256": hashlib.sha256(data).hexdigest(),
                "in_tmp_dir": True,
            }
        },
    }
    assert leftovers(tmp_dir) == []  # cleaned up after the request


@pytest.mark.asyncio
async def test_one_byte_over_the_limit_is_refused_leaving_nothing(tmp_dir: Path) -> None:
    response = await post(tmp_dir, upload_body(b"x" * 1001))

    assert response.status_code == 413
    assert error_of(response) == {"code": "PAYLOAD_TOO_LARGE", "field": "0"}
    assert exists(tmp_dir)  # a temp file was started...
    assert leftovers(tmp_dir) == []  # ...and removed


@pytest.mark.asyncio
async def test_too_many_files_in_the_map(tmp_dir: Path) -> None:
    content = body(
        part("operations", operations(other=None)),
        part("map", json.dumps({"0": ["variables.file"], "1": ["variables.other"]})),
        part("0", b"a", "a.txt"),
        part("1", b"b", "b.txt"),
    )
    response = await post(tmp_dir, content, MultipartLimits(max_file_bytes=1000, max_files=1, max_parts=10))
    assert response.status_code == 413
    assert error_of(response)["code"] == "PAYLOAD_TOO_LARGE"
    assert leftovers(tmp_dir) == []


@pytest.mark.asyncio
async def test_too_many_parts(tmp_dir: Path) -> None:
    content = body(
        part("operations", operations()),
        part("map", json.dumps({"0": ["variables.file"]})),
        part("0", b"a", "a.txt"),
        part("extra", "surprise"),
    )
    response = await post(tmp_dir, content)
    assert response.status_code == 413
    assert error_of(response)["code"] == "PAYLOAD_TOO_LARGE"
    assert leftovers(tmp_dir) == []


@pytest.mark.asyncio
async def test_an_oversized_operations_field_is_refused(tmp_dir: Path) -> None:
    content = upload_body(b"a", ops=operations(padding="x" * 3000))
    response = await post(tmp_dir, content)
    assert response.status_code == 413
    assert error_of(response) == {"code": "PAYLOAD_TOO_LARGE", "field": "operations"}


@pytest.mark.asyncio
async def test_content_length_over_the_body_limit_is_refused_before_reading(tmp_dir: Path) -> None:
    limits = MultipartLimits(max_file_bytes=1000, max_body_bytes=500)
    response = await post(tmp_dir, upload_body(b"x" * 600), limits)
    assert response.status_code == 413
    assert not exists(tmp_dir)  # nothing was even started


MALFORMED: list[tuple[str, bytes, str]] = [
    ("map is not JSON", body(part("operations", operations()), part("map", "{not json"), part("0", b"a", "a")), "map"),
    ("map is a list", upload_body(b"a", mapping=[["variables.file"]]), "map"),
    ("map path missing", upload_body(b"a", mapping={"0": ["variables.nope"]}), "map"),
    ("map path outside variables", upload_body(b"a", mapping={"0": ["query"]}), "map"),
    ("map path to a non-null", upload_body(b"a", mapping={"0": ["variables.c"]}), "map"),
    ("map entry not a list", upload_body(b"a", mapping={"0": "variables.file"}), "map"),
    ("map names a file never sent", upload_body(b"a", mapping={"0": ["variables.file"], "9": ["variables.x"]}), "map"),
    ("file not in the map", body(part("operations", operations()), part("map", "{}"), part("0", b"a", "a")), "0"),
    ("operations missing", body(part("map", json.dumps({"0": ["variables.file"]})), part("0", b"a", "a")), "map"),
    ("operations not JSON", upload_body(b"a", ops="{"), "operations"),
    ("operations not an object", upload_body(b"a", ops="42"), "operations"),
    ("map missing", body(part("operations", operations())), ""),
    ("truncated body", upload_body(b"abc")[:-40], ""),
    ("no multipart at all", b"garbage", ""),
]


@pytest.mark.parametrize(("name", "content", "field"), MALFORMED, ids=[case[0] for case in MALFORMED])
@pytest.mark.asyncio
async def test_malformed_requests_are_bad_user_input(tmp_dir: Path, name: str, content: bytes, field: str) -> None:
    response = await post(tmp_dir, content, MultipartLimits(max_file_bytes=1000, max_files=2, max_parts=4))
    assert response.status_code == 400, response.text
    extensions = error_of(response)
    assert extensions["code"] == "BAD_USER_INPUT"
    if field:
        assert extensions["field"] == field
    assert leftovers(tmp_dir) == []


@pytest.mark.parametrize("headers", [{}, {"x-apollo-operation-name": " "}])
@pytest.mark.asyncio
async def test_uploads_without_a_preflight_header_are_refused_before_anything_is_stored(
    tmp_dir: Path, headers: dict[str, str]
) -> None:
    transport = httpx.ASGITransport(app=make_app(tmp_dir, LIMITS))
    async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as client:
        response = await client.post(
            "/graphql", content=upload_body(b"a"), headers={"content-type": CONTENT_TYPE, **headers}
        )
    assert response.status_code == 400
    assert error_of(response) == {"code": "BAD_USER_INPUT", "field": "headers"}
    assert not exists(tmp_dir)


@pytest.mark.asyncio
async def test_long_filenames_are_bounded(tmp_dir: Path) -> None:
    limits = MultipartLimits(max_file_bytes=1000, max_filename_chars=20)
    response = await post(tmp_dir, upload_body(b"a", filename="x" * 500 + ".png"), limits)
    assert response.json()["files"]["0"]["filename"] == "x" * 16 + ".png"


@pytest.mark.asyncio
async def test_missing_boundary_is_bad_user_input(tmp_dir: Path) -> None:
    response = await post(tmp_dir, upload_body(b"a"), content_type="multipart/form-data")
    assert response.status_code == 400


@pytest.mark.asyncio
async def test_a_real_client_encoding_batches_and_multiple_paths(tmp_dir: Path) -> None:
    # Given a batched request, as httpx itself encodes multipart, where one file
    # fills two variables
    ops = [
        {"query": UPLOAD, "variables": {"c": "1", "file": None}},
        {"query": UPLOAD, "variables": {"c": "2", "file": None, "list": [None, 5]}},
    ]
    transport = httpx.ASGITransport(app=make_app(tmp_dir, MultipartLimits(max_files=2, max_parts=4)))
    async with httpx.AsyncClient(transport=transport, base_url="http://parley.test") as client:
        response = await client.post(
            "/graphql",
            data={
                "operations": json.dumps(ops),
                "map": json.dumps({"a": ["0.variables.file"], "b": ["1.variables.file", "1.variables.list.0"]}),
            },
            files={"a": ("résumé.pdf", b"%PDF-1.4", "application/pdf"), "b": ("b.bin", b"\x00\x01", None)},
            headers={"x-apollo-operation-name": "Upload"},
        )

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["operations"] == [
        {"query": UPLOAD, "variables": {"c": "1", "file": {"$upload": "a"}}},
        {"query": UPLOAD, "variables": {"c": "2", "file": {"$upload": "b"}, "list": [{"$upload": "b"}, 5]}},
    ]
    assert result["files"]["a"]["filename"] == "résumé.pdf"
    assert result["files"]["b"]["size"] == 2
    assert leftovers(tmp_dir) == []


def upload_prefix() -> bytes:
    """A request up to the first byte of the file's data."""
    return upload_body(b"")[: -len(f"\r\n--{BOUNDARY}--\r\n")]


async def slow_body(prefix: bytes, chunk: bytes, count: int, consumed: list[int]) -> AsyncIterator[bytes]:
    yield prefix
    for index in range(count):
        consumed.append(index)
        yield chunk


@pytest.mark.asyncio
async def test_parsing_stops_reading_as_soon_as_the_file_passes_the_limit(tmp_dir: Path) -> None:
    # Given a client streaming a 100-chunk file against a limit of 10 chunks
    prefix = upload_prefix()
    consumed: list[int] = []
    limits = MultipartLimits(max_file_bytes=10 * 1024, max_body_bytes=10**9)

    with pytest.raises(PayloadTooLarge):
        await parse_graphql_multipart(
            CONTENT_TYPE, slow_body(prefix, b"z" * 1024, 100, consumed), tmp_dir=tmp_dir, limits=limits
        )

    # Then the parser gave up at the 11th chunk and left no file behind
    assert len(consumed) == 11
    assert exists(tmp_dir)
    assert leftovers(tmp_dir) == []


@pytest.mark.asyncio
async def test_a_client_that_disappears_mid_file_leaves_nothing(tmp_dir: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield upload_prefix() + b"partial file data"
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        await parse_graphql_multipart(CONTENT_TYPE, broken(), tmp_dir=tmp_dir, limits=LIMITS)
    assert exists(tmp_dir)
    assert leftovers(tmp_dir) == []


@pytest.mark.asyncio
async def test_cleanup_removes_the_temp_files(tmp_dir: Path) -> None:
    async def once() -> AsyncIterator[bytes]:
        yield upload_body(b"hello")

    parsed = await parse_graphql_multipart(CONTENT_TYPE, once(), tmp_dir=tmp_dir, limits=LIMITS)
    upload = parsed.files["0"]
    assert upload.path.read_bytes() == b"hello"
    assert upload.path.stat().st_mode & 0o777 == 0o600

    await parsed.cleanup()
    await parsed.cleanup()  # idempotent

    assert not upload.path.exists()
    assert leftovers(tmp_dir) == []


def test_bad_user_input_carries_the_field() -> None:
    error = BadUserInput("x", field="map")
    assert error.extensions == {"code": "BAD_USER_INPUT", "field": "map"}


@strawberry.type
class _Query:
    ok: bool = True


@strawberry.type
class _Mutation:
    @strawberry.mutation
    async def upload_attachment(self, conversation_id: strawberry.ID, file: Upload) -> str:
        assert isinstance(file, UploadedFile)
        data = b"".join([chunk async for chunk in file.chunks()])
        return f"{conversation_id}:{file.filename}:{file.size}:{data.decode()}"


@pytest.mark.asyncio
async def test_parsed_operations_run_through_strawberry_with_the_upload_scalar(tmp_dir: Path) -> None:
    # Given a schema with an Upload argument, executed the way server.py executes
    schema = strawberry.Schema(query=_Query, mutation=_Mutation)

    query = "mutation($c: ID!, $file: Upload!) { uploadAttachment(conversationId: $c, file: $file) }"
    ops = json.dumps({"query": query, "variables": {"c": "conv-1", "file": None}})

    async def once() -> AsyncIterator[bytes]:
        yield upload_body(b"hello", filename="../hi.txt", ops=ops)

    # When the multipart request is parsed and its operation executed
    async with await parse_graphql_multipart(CONTENT_TYPE, once(), tmp_dir=tmp_dir, limits=LIMITS) as parsed:
        assert isinstance(parsed.operations, dict)
        result = await schema.execute(parsed.operations["query"], variable_values=parsed.operations["variables"])

    # Then the resolver got the streamed file, and nothing is left afterwards
    assert result.errors is None
    assert result.data == {"uploadAttachment": "conv-1:hi.txt:5:hello"}
    assert leftovers(tmp_dir) == []


@pytest.mark.asyncio
async def test_parsing_straight_from_asgi_receive(tmp_dir: Path) -> None:
    # Given a bare ASGI app (no Starlette Request) that parses from `receive`
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        async with await parse_graphql_multipart(
            headers[b"content-type"].decode(), asgi_body(receive), tmp_dir=tmp_dir, limits=LIMITS
        ) as parsed:
            seen["size"] = parsed.files["0"].size
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley.test") as client:
        response = await client.post(
            "/graphql", content=upload_body(b"x" * 999), headers={"content-type": CONTENT_TYPE}
        )

    assert response.status_code == 204
    assert seen == {"size": 999}
    assert leftovers(tmp_dir) == []
