"""The HTTP perimeter: status codes, media types, headers, CORS, client addresses."""
from __future__ import annotations

import pytest

from auth.perimeter import client_address
from tests.conftest import error_code

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def assert_security_headers(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert "permissions-policy" in response.headers


async def test_bad_json_is_400(client):
    response = await client.post("/graphql", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_code(response.json()["errors"][0]) == "BAD_USER_INPUT"
    assert_security_headers(response)


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"query": ""}', b'{"query": 5}', b'"just a string"'])
async def test_no_graphql_request_is_400(client, body):
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400


async def test_batched_request_is_400(client):
    response = await client.post("/graphql", json=[{"query": "{ __typename }"}, {"query": "{ __typename }"}])
    assert response.status_code == 400
    assert "Batched" in response.json()["errors"][0]["message"]
    assert_security_headers(response)


async def test_body_of_exactly_the_limit_is_read_and_one_more_byte_is_413(client, settings):
    limit = settings.max_request_bytes

    def body_of(size: int) -> bytes:
        prefix, suffix = b'{"query": "{ __typename }", "extensions": {"pad": "', b'"}}'
        return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix

    at_limit = await client.post("/graphql", content=body_of(limit), headers={"content-type": "application/json"})
    assert at_limit.status_code == 200 and at_limit.json()["data"] == {"__typename": "Query"}

    over = await client.post("/graphql", content=body_of(limit + 1), headers={"content-type": "application/json"})
    assert over.status_code == 413
    assert error_code(over.json()["errors"][0]) == "PAYLOAD_TOO_LARGE"
    assert_security_headers(over)


async def test_body_over_the_limit_without_content_length_is_413(client, settings):
    async def chunks():
        yield b'{"query": "{ __typename }", "pad": "'
        for _ in range(settings.max_request_bytes // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_get_mutation_is_405_and_get_query_works(client):
    mutation = await client.get("/graphql", params={"query": "mutation { logout }"})
    assert mutation.status_code == 405
    assert_security_headers(mutation)
    query = await client.get("/graphql", params={"query": "{ __typename }"})
    assert query.status_code == 200 and query.json() == {"data": {"__typename": "Query"}}
    assert_security_headers(query)


async def test_graphql_response_media_type_is_honoured(client):
    accept = {"accept": "application/graphql-response+json"}
    ok = await client.post("/graphql", json={"query": "{ __typename }"}, headers=accept)
    assert ok.headers["content-type"].startswith("application/graphql-response+json")
    invalid = await client.post("/graphql", json={"query": "{ nope }"}, headers=accept)
    assert invalid.status_code == 400
    assert invalid.headers["content-type"].startswith("application/graphql-response+json")
    assert error_code(invalid.json()["errors"][0]) == "GRAPHQL_VALIDATION_FAILED"
    bad_json = await client.post("/graphql", content=b"{", headers={**accept, "content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.headers["content-type"].startswith("application/graphql-response+json")
    plain = await client.post("/graphql", json={"query": "{ nope }"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")


async def test_parse_errors_have_their_code(client):
    response = await client.post("/graphql", json={"query": "{ me { "})
    assert error_code(response.json()["errors"][0]) == "GRAPHQL_PARSE_FAILED"


async def test_security_headers_on_other_routes(client):
    for path in ("/healthz", "/readyz", "/nowhere"):
        response = await client.get(path)
        assert_security_headers(response)
    graphql_error = await client.post("/graphql", json={"query": "{ me { id } }"})
    assert graphql_error.status_code == 200
    assert_security_headers(graphql_error)


async def test_hsts_only_behind_https(app_factory):
    _, plain = await app_factory()
    assert "strict-transport-security" not in (await plain.client.get("/healthz")).headers
    _, https = await app_factory(behind_https=True)
    assert (await https.client.get("/healthz")).headers["strict-transport-security"].startswith("max-age=")


# ---------------------------------------------------------------------------- CORS


async def test_cors_allow_list(app_factory):
    _, gql = await app_factory(cors_origins=("https://chat.example",))
    client = gql.client

    preflight = await client.options("/graphql", headers={
        "origin": "https://chat.example", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    })
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    refused = await client.options("/graphql", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST",
    })
    assert "access-control-allow-origin" not in refused.headers

    simple = await client.post("/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://chat.example"})
    assert simple.headers["access-control-allow-origin"] == "https://chat.example"
    assert "retry-after" in simple.headers["access-control-expose-headers"].lower()
    other = await client.post("/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_no_cors_by_default(client):
    response = await client.post("/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://a.example"})
    assert "access-control-allow-origin" not in response.headers


# -------------------------------------------------------------------- client address


def _scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


def test_client_address_ignores_forwarded_for_from_untrusted_peers():
    assert client_address(_scope("203.0.113.9", "1.2.3.4"), ()) == "203.0.113.9"
    assert client_address(_scope("203.0.113.9", "1.2.3.4"), ("10.0.0.0/8",)) == "203.0.113.9"


def test_client_address_takes_the_rightmost_untrusted_hop_behind_trusted_proxies():
    proxies = ("10.0.0.0/8",)
    assert client_address(_scope("10.0.0.2", "1.2.3.4"), proxies) == "1.2.3.4"
    # a client-supplied first hop cannot spoof: the proxy appended the real one
    assert client_address(_scope("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.7"), proxies) == "1.2.3.4"
    assert client_address(_scope("10.0.0.2"), proxies) == "10.0.0.2"


async def test_the_address_reaches_the_session_row(app_factory):
    _, gql = await app_factory(trusted_proxies=("127.0.0.1",))
    data = await gql.ok(
        'mutation { register(input: {username: "alice", password: "long enough pw"}) { session { ipAddress } } }',
        headers={"x-forwarded-for": "198.51.100.7"},
    )
    assert data["register"]["session"]["ipAddress"] == "198.51.100.7"

