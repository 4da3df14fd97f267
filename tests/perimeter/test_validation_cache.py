"""The parse and limit-verdict memos of schema/validation_cache.py change no outcome."""
from __future__ import annotations

from tests.conftest import error_code
from tests.factories import create_user

QUERY = (
    "query($n: Int, $m: Int) { conversations(first:$n){edges{node{members(first:$m){edges{node{id}}} "
    "messages(last:$n){edges{node{id}}}}}} }"
)


def _validation_messages(body: dict) -> list[str]:
    return [e["message"] for e in body.get("errors", []) if error_code(e) == "GRAPHQL_VALIDATION_FAILED"]


async def test_a_remembered_pass_is_per_page_size(app, gql):
    alice = await create_user(app, "alice")
    for _ in range(3):  # the first pass, then remembered verdicts
        assert _validation_messages(await gql(QUERY, {"n": 10, "m": 10}, token=alice.token)) == []
    cases = [({"n": 100, "m": 100}, True), ({"n": 10, "m": 100}, False), ({"n": 100.0, "m": 100}, True),
             ({"n": 100}, True), ({"n": 100, "m": 100}, True), ({"n": 10, "m": 100}, False)]
    for variables, refused in cases:
        messages = _validation_messages(await gql(QUERY, variables, token=alice.token))
        assert [m.startswith("Query cost exceeds the limit") for m in messages] == ([True] if refused else []), (
            variables
        )
    assert _validation_messages(await gql(QUERY, {"n": 10, "m": 10}, token=alice.token)) == []


async def test_parse_errors_are_reported_every_time(app, gql):
    for _ in range(2):
        body = await gql("{ me { id ", expect_status=None)
        assert error_code(body["errors"][0]) == "GRAPHQL_PARSE_FAILED"


async def test_a_remembered_document_is_still_validated_against_the_limits(app, gql):
    alice = await create_user(app, "alice")
    deep = "{ " + "me { " * 14 + "id" + " }" * 14 + " }"
    for _ in range(2):
        body = await gql(deep, token=alice.token, expect_status=None)
        assert body.get("errors"), body
