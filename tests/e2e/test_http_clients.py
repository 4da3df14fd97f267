"""Parley over HTTP as the real client libraries see it, against a real uvicorn.

Each Node script (tests/e2e/http_*.mjs) runs one scenario with a real client (Apollo
Client 4, urql 6, apollo-upload-client, or plain fetch) and prints what it observed:
the data, the errors as the library exposes them, and the requests it put on the wire.
The scenario runs once per server (module-scoped fixtures); the tests below assert on
its parts. Backends: embedded always, services (PostgreSQL + Redis) when configured.
"""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from settings import Settings
from tests.e2e.conftest import (
    ALLOWED_ORIGIN,
    OTHER_ORIGIN,
    RATE_LIMITED_HTTP_REQUESTS,
    ParleyServer,
    node_skip_reason,
    run_node,
)

PASSWORD = "correct horse battery staple"
GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"
URQL_ACCEPT = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)
URQL_GET_PARAMS = ["operationName", "query", "variables"]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def codes(step: dict[str, Any]) -> list[str | None]:
    return list(step["error"]["codes"])


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip()


# --------------------------------------------------------------------------- scenarios


@pytest.fixture(scope="module")
def apollo(http_server: ParleyServer) -> dict[str, Any]:
    username = unique("apollo")
    result = run_node(
        "http_apollo.mjs", "flow", http_server.graphql_url,
        env={"PARLEY_USERNAME": username, "PARLEY_PASSWORD": PASSWORD},
    )
    result["username"] = username
    return dict(result)


@pytest.fixture(scope="module")
def urql(http_server: ParleyServer) -> dict[str, Any]:
    username = unique("urql")
    result = run_node(
        "http_urql.mjs", http_server.graphql_url, env={"PARLEY_USERNAME": username, "PARLEY_PASSWORD": PASSWORD}
    )
    result["username"] = username
    return dict(result)


@pytest.fixture(scope="module")
def upload(http_server: ParleyServer) -> dict[str, Any]:
    reason = node_skip_reason("apollo-upload-client", "extract-files")
    if reason:
        pytest.skip(reason)
    return dict(run_node(
        "http_upload.mjs", http_server.graphql_url,
        env={
            "PARLEY_USERNAME": unique("upload"), "PARLEY_PASSWORD": PASSWORD,
            "PARLEY_MAX_UPLOAD_BYTES": str(Settings().max_upload_bytes),
        },
    ))


@pytest.fixture(scope="module")
def probes(http_server: ParleyServer) -> dict[str, Any]:
    return dict(run_node("http_probes.mjs", http_server.url, ALLOWED_ORIGIN, OTHER_ORIGIN))


# ----------------------------------------------------------------- Apollo Client 4


APOLLO_POST_STEPS = (
    "register", "login", "createGroup", "sendMessage", "overview", "wrongPassword", "unauthenticated",
    "invalidDocument", "oversized", "getClientMutation", "badToken",
)
APOLLO_AUTHENTICATED_STEPS = (
    "createGroup", "sendMessage", "overview", "invalidDocument", "oversized", "getQuery", "getClientMutation",
    "badToken",
)


def test_apollo_posts_json_and_asks_for_graphql_response_json(apollo: dict[str, Any]) -> None:
    # Given Apollo Client 4's HttpLink with its defaults
    # Then every operation is a JSON POST asking for application/graphql-response+json first,
    # and Parley answers in that media type, refusals included
    for name in APOLLO_POST_STEPS:
        wire = apollo[name]["wire"]
        assert (wire["method"], wire["body"], wire["queryParams"]) == ("POST", "string", []), name
        assert wire["headers"]["accept"] == APOLLO_ACCEPT, name
        assert wire["headers"]["content-type"] == JSON, name
        assert media_type(wire["contentType"]) == GRAPHQL_RESPONSE, name
    for name in APOLLO_AUTHENTICATED_STEPS:
        assert apollo[name]["wire"]["headers"]["authorization"] == "Bearer <token>", name
    for name in ("register", "login", "wrongPassword", "unauthenticated"):
        assert "authorization" not in apollo[name]["wire"]["headers"], name


def test_apollo_registers_logs_in_and_reads_with_the_authorization_header(apollo: dict[str, Any]) -> None:
    username = apollo["username"]
    # When Apollo registers, logs in, and reads with the token a context link adds
    register, login = apollo["register"], apollo["login"]
    assert register["ok"] and login["ok"], (register, login)
    user = register["data"]["register"]["user"]
    assert user == {"__typename": "User", "id": user["id"], "username": username, "displayName": "Apollo Tester"}
    assert login["data"]["login"]["user"] == {"__typename": "User", "id": user["id"], "username": username}
    assert login["data"]["login"]["session"]["current"] is True
    assert login["data"]["login"]["accessToken"] != register["data"]["register"]["accessToken"]
    assert login["data"]["login"]["refreshToken"]

    group = apollo["createGroup"]["data"]["createGroup"]
    assert (group["name"], group["viewerRole"]) == (f"{username} team", "OWNER")
    sent = apollo["sendMessage"]["data"]["sendMessage"]
    assert (sent["body"], sent["clientMessageId"], sent["sender"]["username"]) == (
        "hello from Apollo", "apollo-1", username)

    # Then me, users and conversations come back as the cache normalises them
    overview = apollo["overview"]
    assert overview["ok"], overview
    data = overview["data"]
    assert data["me"] == {"__typename": "User", "id": user["id"], "username": username, "displayName": "Apollo Tester"}
    user_nodes = [e["node"] for e in data["users"]["edges"]]
    assert user_nodes == [{"__typename": "User", "id": user["id"], "username": username}]
    assert data["conversations"]["pageInfo"] == {"__typename": "PageInfo", "hasNextPage": False}
    assert [e["node"] for e in data["conversations"]["edges"]] == [{
        "__typename": "Conversation",
        "id": group["conversation"]["id"],
        "kind": "GROUP",
        "title": f"{username} team",
        "lastMessage": {
            "__typename": "Message", "body": "hello from Apollo",
            "sender": {"__typename": "User", "username": username},
        },
    }]


@pytest.mark.parametrize(
    ("step", "code", "message"),
    [
        ("wrongPassword", "UNAUTHENTICATED", "Invalid username or password"),
        ("unauthenticated", "UNAUTHENTICATED", "Authentication required"),
        ("badToken", "UNAUTHENTICATED", "invalid token"),
    ],
)
def test_apollo_exposes_the_code_of_graphql_errors(apollo: dict[str, Any], step: str, code: str, message: str) -> None:
    # Given an operation that fails in execution (HTTP 200 with errors)
    result = apollo[step]
    # Then Apollo 4 throws CombinedGraphQLErrors carrying the error's extensions.code
    assert result["ok"] is False
    assert result["error"]["name"] == "CombinedGraphQLErrors"
    assert result["error"]["message"] == message
    assert codes(result) == [code]
    assert result["wire"]["status"] == 200


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [("invalidDocument", 400, "GRAPHQL_VALIDATION_FAILED"), ("oversized", 413, "PAYLOAD_TOO_LARGE")],
)
def test_apollo_reads_the_errors_of_refused_requests(
    apollo: dict[str, Any], step: str, status: int, code: str
) -> None:
    # Given a request Parley refuses with a 4xx status
    result = apollo[step]
    # Then, because the reply is application/graphql-response+json, Apollo 4 reads its
    # errors (a CombinedGraphQLErrors with the code), not an opaque ServerError
    assert result["wire"]["status"] == status
    assert media_type(result["wire"]["contentType"]) == GRAPHQL_RESPONSE
    assert result["error"]["name"] == "CombinedGraphQLErrors"
    assert codes(result) == [code]


def test_apollo_get_queries_work_and_its_mutations_stay_post(apollo: dict[str, Any]) -> None:
    # Given HttpLink with useGETForQueries
    get, mutation = apollo["getQuery"], apollo["getClientMutation"]
    # Then queries go as GET with the operation in the URL and are answered
    assert get["wire"]["method"] == "GET" and get["wire"]["body"] is None
    assert {"query", "operationName", "variables"} <= set(get["wire"]["queryParams"])
    assert get["wire"]["status"] == 200
    assert get["ok"], get
    assert get["data"]["me"]["username"] == apollo["username"]
    # And mutations still go as POST
    assert mutation["wire"]["method"] == "POST"
    assert mutation["ok"], mutation
    assert mutation["data"]["sendMessage"]["body"] == "sent by the GET client"


def test_apollo_reads_a_rate_limited_request_with_retry_after(rate_limited_server: ParleyServer) -> None:
    # Given a server whose per-client HTTP budget is RATE_LIMITED_HTTP_REQUESTS a minute
    # When Apollo keeps querying
    result = run_node("http_apollo.mjs", "ratelimit", rate_limited_server.graphql_url)
    # Then the request over the budget is a 429 with Retry-After that Apollo 4 reads as
    # CombinedGraphQLErrors RATE_LIMITED with extensions.retryAfter
    assert result["statuses"] == [200] * RATE_LIMITED_HTTP_REQUESTS + [429]
    refused = result["refused"]
    assert refused["error"]["name"] == "CombinedGraphQLErrors"
    assert codes(refused) == ["RATE_LIMITED"]
    retry_after = refused["error"]["extensions"][0]["retryAfter"]
    assert 1 <= retry_after <= 60
    wire = refused["wire"]
    assert media_type(wire["contentType"]) == GRAPHQL_RESPONSE
    assert wire["retryAfter"] is not None and abs(int(wire["retryAfter"]) - retry_after) <= 1


# ---------------------------------------------------------------------------- urql 6


URQL_GET_STEPS = ("anonymousMe", "me", "users", "meAfterUpdate", "badPageSize", "invalidDocument")
URQL_POST_STEPS = ("register", "wrongPassword", "login", "updateProfile", "oversized")


def test_urql_sends_short_queries_as_get_and_mutations_as_post(urql: dict[str, Any]) -> None:
    # Given @urql/core 6 with fetchExchange and its default preferGetMethod
    # Then short queries are GETs with the operation in the URL, and no body or content-type
    for name in URQL_GET_STEPS:
        wire = urql[name]["wire"]
        assert (wire["method"], wire["body"], wire["queryParams"]) == ("GET", None, URQL_GET_PARAMS), name
        assert "content-type" not in wire["headers"], name
        assert wire["urlLength"] <= 2048, name
    # And mutations are JSON POSTs
    for name in URQL_POST_STEPS:
        wire = urql[name]["wire"]
        assert (wire["method"], wire["body"], wire["headers"]["content-type"]) == ("POST", "string", JSON), name
    # And a query too long for a URL falls back to POST by itself
    assert (urql["longQuery"]["wire"]["method"], urql["longQuery"]["wire"]["body"]) == ("POST", "string")
    # And every request asks for graphql-response+json first, which Parley answers with
    for name in (*URQL_GET_STEPS, *URQL_POST_STEPS, "longQuery"):
        assert urql[name]["wire"]["headers"]["accept"] == URQL_ACCEPT, name
        assert media_type(urql[name]["wire"]["contentType"]) == GRAPHQL_RESPONSE, name
    for name in ("me", "users", "updateProfile", "meAfterUpdate", "longQuery", "badPageSize", "invalidDocument"):
        assert urql[name]["wire"]["headers"]["authorization"] == "Bearer <token>", name


def test_urql_queries_over_get_and_mutations_over_post_work(urql: dict[str, Any]) -> None:
    username = urql["username"]
    for name in ("register", "login", "me", "users", "updateProfile", "meAfterUpdate", "longQuery"):
        assert urql[name]["error"] is None, (name, urql[name]["error"])
    user_id = urql["register"]["data"]["register"]["user"]["id"]
    assert urql["login"]["data"]["login"]["user"] == {"id": user_id, "username": username}
    assert urql["me"]["data"] == {"me": {"id": user_id, "username": username, "displayName": username}}
    assert urql["users"]["data"] == {"users": {"edges": [{"node": {"id": user_id, "username": username}}]}}
    assert urql["updateProfile"]["data"] == {"updateProfile": {"id": user_id, "displayName": "Urql Tester"}}
    # The GET after the mutation sees the change (no stale GET response anywhere)
    assert urql["meAfterUpdate"]["data"] == {"me": {"id": user_id, "username": username, "displayName": "Urql Tester"}}
    long_query = urql["longQuery"]["data"]
    assert sorted(long_query) == sorted(f"me_{'x' * 80}_{i}" for i in range(25))
    assert all(v == {"id": user_id, "username": username, "displayName": "Urql Tester"} for v in long_query.values())


@pytest.mark.parametrize(
    ("step", "status", "extensions"),
    [
        ("wrongPassword", 200, {"code": "UNAUTHENTICATED"}),
        ("anonymousMe", 200, {"code": "UNAUTHENTICATED"}),
        ("badPageSize", 200, {"code": "BAD_USER_INPUT", "field": "first"}),
        ("invalidDocument", 400, {"code": "GRAPHQL_VALIDATION_FAILED"}),
        ("oversized", 413, {"code": "PAYLOAD_TOO_LARGE"}),
    ],
)
def test_urql_errors_carry_their_codes(
    urql: dict[str, Any], step: str, status: int, extensions: dict[str, Any]
) -> None:
    # Then CombinedError.graphQLErrors[].extensions holds the code, over GET and POST,
    # for refused (4xx) requests too, and it is never a network error
    error = urql[step]["error"]
    assert error["name"] == "CombinedError"
    assert error["networkError"] is None
    assert error["extensions"] == [extensions]
    assert (error["status"], urql[step]["wire"]["status"]) == (status, status)
    assert urql[step]["data"] is None


# --------------------------------------------------------------------------- uploads


def stored_files(server: ParleyServer) -> list[Path]:
    root = server.data_dir / "uploads"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp")


def temp_files(server: ParleyServer) -> list[Path]:
    tmp = server.data_dir / "uploads" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def test_upload_without_a_csrf_header_is_refused_with_400(upload: dict[str, Any]) -> None:
    # Given apollo-upload-client as it comes (it adds no CSRF header)
    result = upload["withoutHeader"]
    wire = result["wire"]
    assert (wire["method"], wire["body"]) == ("POST", "formdata")
    assert "apollo-require-preflight" not in wire["headers"]
    assert "x-apollo-operation-name" not in wire["headers"]
    # Then the multipart request is refused with 400 and a readable BAD_USER_INPUT
    assert wire["status"] == 400
    assert media_type(wire["contentType"]) == GRAPHQL_RESPONSE
    assert result["error"]["name"] == "CombinedGraphQLErrors"
    assert result["error"]["extensions"] == [{"code": "BAD_USER_INPUT", "field": "headers"}]


def test_upload_over_the_limit_is_refused_with_413(upload: dict[str, Any]) -> None:
    result = upload["tooLarge"]
    assert result["wire"]["headers"]["apollo-require-preflight"] == "true"
    assert result["wire"]["status"] == 413
    assert result["error"]["name"] == "CombinedGraphQLErrors"
    assert codes(result) == ["PAYLOAD_TOO_LARGE"]


def test_upload_with_the_preflight_header_works(upload: dict[str, Any]) -> None:
    assert upload["setup"]["registered"] is True, upload["setup"]
    # Given the app sets Apollo-Require-Preflight on its UploadHttpLink
    result = upload["upload"]
    wire = result["wire"]
    assert (wire["method"], wire["body"], wire["headers"]["apollo-require-preflight"]) == ("POST", "formdata", "true")
    # Then uploadAttachment stores it: the name sanitised, the type sniffed from the bytes
    assert result["ok"], result
    attachment = result["data"]["uploadAttachment"]
    assert (attachment["filename"], attachment["contentType"], attachment["kind"], attachment["size"]) == (
        "notes.txt", "text/plain", "DOCUMENT", len(upload["content"].encode()))
    assert attachment["message"] is None
    assert attachment["url"].startswith("/files/")
    # And X-Apollo-Operation-Name is accepted instead
    other = upload["withOperationNameHeader"]
    assert other["wire"]["headers"]["x-apollo-operation-name"] == "Upload"
    assert other["ok"], other
    assert other["data"]["uploadAttachment"]["filename"] == "second.txt"


def test_uploaded_file_is_sent_and_downloaded_from_its_signed_url(upload: dict[str, Any]) -> None:
    sent = upload["send"]
    assert sent["ok"], sent
    attachment_id = upload["upload"]["data"]["uploadAttachment"]["id"]
    assert [a["id"] for a in sent["data"]["sendMessage"]["attachments"]] == [attachment_id]
    # The signed URL works from plain fetch with no Authorization header
    assert upload["download"]["status"] == 200
    assert upload["download"]["body"] == upload["content"]
    assert media_type(upload["download"]["contentType"]) == "text/plain"


def test_refused_uploads_left_nothing_behind(upload: dict[str, Any], http_server: ParleyServer) -> None:
    # Given the upload scenario ran (two refusals, two accepted uploads)
    assert upload["upload"]["ok"] and upload["withOperationNameHeader"]["ok"]
    # Then exactly the two accepted files are stored, and no temp file is left
    stored = stored_files(http_server)
    assert len(stored) == 2, stored
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in stored}
    assert digests == {hashlib.sha256(c).hexdigest() for c in (upload["content"].encode(), b"second file\n")}
    assert temp_files(http_server) == []


# ---------------------------------------------------------------- plain fetch probes


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.mark.parametrize(
    ("probe", "status", "extensions"),
    [
        ("badJson", 400, {"code": "BAD_USER_INPUT", "field": "body"}),
        ("notAnObject", 400, {"code": "BAD_USER_INPUT", "field": "body"}),
        ("batch", 400, {"code": "BAD_USER_INPUT", "field": "body"}),
        ("noQuery", 400, {"code": "BAD_USER_INPUT", "field": "query"}),
        ("emptyQuery", 400, {"code": "BAD_USER_INPUT", "field": "query"}),
        ("getNoQuery", 400, {"code": "BAD_USER_INPUT", "field": "query"}),
        ("getMutation", 405, {"code": "BAD_USER_INPUT", "field": "query"}),
        ("parseError", 400, {"code": "GRAPHQL_PARSE_FAILED"}),
        ("invalidGraphqlResponse", 400, {"code": "GRAPHQL_VALIDATION_FAILED"}),
    ],
)
def test_refused_requests_have_their_status_and_code(
    probes: dict[str, Any], probe: str, status: int, extensions: dict[str, Any]
) -> None:
    result = probes[probe]
    assert result["status"] == status
    assert media_type(result["headers"]["content-type"]) == GRAPHQL_RESPONSE
    assert [e["extensions"] for e in result["body"]["errors"]] == [extensions]
    assert "data" not in result["body"]


def test_get_mutation_is_405_naming_post(probes: dict[str, Any]) -> None:
    for probe in ("getMutation", "getMutationPlainAccept"):
        assert probes[probe]["status"] == 405
        assert probes[probe]["headers"]["allow"] == "POST"
    assert media_type(probes["getMutationPlainAccept"]["headers"]["content-type"]) == JSON


def test_media_type_follows_the_accept_header(probes: dict[str, Any]) -> None:
    ok = {"data": {"__typename": "Query"}}
    for probe in ("postGraphqlResponse", "postBothAccepted", "getQuery"):
        assert (probes[probe]["status"], probes[probe]["body"]) == (200, ok), probe
        assert media_type(probes[probe]["headers"]["content-type"]) == GRAPHQL_RESPONSE, probe
    for probe in ("postJson", "postNoAccept"):
        assert (probes[probe]["status"], probes[probe]["body"]) == (200, ok), probe
        assert media_type(probes[probe]["headers"]["content-type"]) == JSON, probe
    # application/json keeps the legacy rules: a refused body is still 400, a document
    # that fails validation is 200 with errors
    assert probes["badJsonPlainAccept"]["status"] == 400
    assert media_type(probes["badJsonPlainAccept"]["headers"]["content-type"]) == JSON
    invalid = probes["invalidJson"]
    assert invalid["status"] == 200 and invalid["body"]["data"] is None
    assert invalid["body"]["errors"][0]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


def test_cors_preflight_from_the_allowed_origin(probes: dict[str, Any]) -> None:
    headers = probes["preflightAllowed"]["headers"]
    assert probes["preflightAllowed"]["status"] == 200
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert {"GET", "POST"} <= {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "apollo-require-preflight", "x-apollo-operation-name"} <= allowed
    assert "access-control-allow-credentials" not in headers
    assert "origin" in headers["vary"].lower()


def test_cors_preflight_from_another_origin_is_not_allowed(probes: dict[str, Any]) -> None:
    assert probes["preflightOther"]["status"] == 400
    assert "access-control-allow-origin" not in probes["preflightOther"]["headers"]


def test_cors_on_actual_requests(probes: dict[str, Any]) -> None:
    allowed = probes["corsAllowed"]["headers"]
    assert allowed["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "retry-after" in allowed["access-control-expose-headers"].lower()
    # A refusal is readable cross-origin too (a browser app can see the 400 and its code)
    refusal = probes["corsAllowedRefusal"]
    assert refusal["status"] == 400
    assert refusal["headers"]["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in probes["corsOther"]["headers"]


def test_security_headers_on_every_response(probes: dict[str, Any]) -> None:
    for name, result in probes.items():
        headers = result["headers"]
        for header, value in SECURITY_HEADERS.items():
            assert headers.get(header) == value, (name, header)
        assert "default-src 'none'" in headers["content-security-policy"], name
        assert "frame-ancestors 'none'" in headers["content-security-policy"], name
        assert "strict-transport-security" not in headers, name  # only when BEHIND_HTTPS
