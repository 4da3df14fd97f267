"""Operation limits at their boundaries, and what production switches off."""
from __future__ import annotations

import pytest

from settings import Settings, SettingsError
from tests.conftest import error_code
from tests.factories import create_user


def _nested(levels: list[str], leaf: str = "id") -> str:
    query = leaf
    for name in reversed(levels):
        query = f"{name} {{ {query} }}"
    return "{ " + query + " }"


def _validation_messages(body: dict) -> list[str]:
    return [e["message"] for e in body.get("errors", []) if error_code(e) == "GRAPHQL_VALIDATION_FAILED"]


HEAD = ["conversations(first: 1)", "edges", "node"]


async def test_depth_12_is_allowed_and_13_refused(app, gql):
    alice = await create_user(app, "alice")
    twelve = _nested(HEAD + ["lastMessage", "conversation"] * 4)  # 11 levels + id
    thirteen = _nested(HEAD + ["lastMessage", "conversation"] * 4 + ["lastMessage"])

    allowed = await gql(twelve, token=alice.token)
    refused = await gql(thirteen, token=alice.token)

    assert _validation_messages(allowed) == []
    assert allowed["data"] == {"conversations": {"edges": []}}
    assert _validation_messages(refused) == ["Query depth exceeds the limit of 12"]
    assert "data" not in refused or refused["data"] is None


async def test_depth_counts_through_fragments(app, gql):
    alice = await create_user(app, "alice")
    inner = _nested(["lastMessage", "conversation"] * 4 + ["lastMessage"])[2:-2]
    query = "query { conversations(first: 1) { ...E } } fragment E on ConversationConnection { edges { node { " \
        + inner + " } } }"
    refused = await gql(query, token=alice.token)
    assert _validation_messages(refused) == ["Query depth exceeds the limit of 12"]


async def test_aliases_30_allowed_31_refused(app, gql):
    alice = await create_user(app, "alice")

    def query(n: int) -> str:
        return "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(n)) + " }"

    allowed = await gql.ok(query(30), token=alice.token)
    assert len(allowed) == 30
    refused = await gql.error(query(31), token=alice.token)
    assert error_code(refused) == "GRAPHQL_VALIDATION_FAILED"
    assert refused["message"] == "Too many aliases (limit 30)"


async def test_tokens_5000_allowed_5001_refused(client):
    def document(extra: int) -> str:  # 1000 operations of 5 tokens: query Qn { __typename }
        ops = [f"query Q{i} {{ __typename }}" for i in range(1000)]
        ops[0] = "query Q0 {" + " __typename" * (1 + extra) + " }"
        return " ".join(ops)

    allowed = await client.post("/graphql", json={"query": document(0), "operationName": "Q0"})
    assert allowed.json() == {"data": {"__typename": "Query"}}
    refused = (await client.post("/graphql", json={"query": document(1), "operationName": "Q0"})).json()
    assert error_code(refused["errors"][0]) == "GRAPHQL_PARSE_FAILED"
    assert "5000 tokens" in refused["errors"][0]["message"] and len(refused["errors"][0]["message"]) < 200


async def test_repeated_fields_100_allowed_101_refused(app, gql):
    alice = await create_user(app, "alice")

    def copies(n: int) -> str:  # n copies of `me` merge into one: n - 1 repeats
        return "{" + " me { id }" * n + " }"

    assert await gql.ok(copies(101), token=alice.token) == {"me": {"id": alice.gid}}
    refused = await gql.error(copies(102), token=alice.token)
    assert error_code(refused) == "GRAPHQL_VALIDATION_FAILED"
    assert refused["message"] == "Too many repeated fields (limit 100)"

    def fragments(n: int) -> str:
        spreads = " ".join(f"...F{i}" for i in range(n))
        return "{ " + spreads + " } " + " ".join(f"fragment F{i} on Query {{ me {{ id }} }}" for i in range(n))

    assert await gql.ok(fragments(101), token=alice.token) == {"me": {"id": alice.gid}}
    refused = await gql.error(fragments(102), token=alice.token)
    assert refused["message"] == "Too many repeated fields (limit 100)"


async def test_fragment_bombs_are_cheap_to_refuse(app, gql):
    import time

    alice = await create_user(app, "alice")
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40))
    bomb = "{ ...F0 } " + chain + " fragment F40 on Query { me { id } }"  # 2^40 copies of `me` if inlined
    started = time.perf_counter()
    refused = await gql.error(bomb, token=alice.token)
    assert time.perf_counter() - started < 2
    assert error_code(refused) == "GRAPHQL_VALIDATION_FAILED"


async def test_directives_50_allowed_51_refused(gql):
    def query(n: int) -> str:
        return "{" + " __typename @include(if: true)" * n + "}"

    assert (await gql.ok(query(50))) == {"__typename": "Query"}
    refused = await gql.error(query(51))
    assert error_code(refused) == "GRAPHQL_VALIDATION_FAILED"
    assert refused["message"] == "Too many directives (limit 50)"


async def test_cost_limit(app, gql):
    alice = await create_user(app, "alice")
    expensive = (
        "{ conversations(first:100){edges{node{members(first:100){edges{node{id}}} "
        "messages(last:100){edges{node{id}}}}}} }"
    )
    cheap = (
        "{ conversations(first:10){edges{node{members(first:10){edges{node{id}}} "
        "messages(last:10){edges{node{id}}}}}} }"
    )

    refused = await gql.error(expensive, token=alice.token)
    assert error_code(refused) == "GRAPHQL_VALIDATION_FAILED"
    assert refused["message"].startswith("Query cost exceeds the limit")

    allowed = await gql(cheap, token=alice.token)
    assert _validation_messages(allowed) == []


async def test_cost_uses_variables(app, gql):
    alice = await create_user(app, "alice")
    query = (
        "query($n: Int) { conversations(first:$n){edges{node{members(first:$n){edges{node{id}}} "
        "messages(last:$n){edges{node{id}}}}}} }"
    )
    assert _validation_messages(await gql(query, {"n": 10}, token=alice.token)) == []
    refused = await gql(query, {"n": 100}, token=alice.token)
    assert _validation_messages(refused)[0].startswith("Query cost exceeds the limit")


# ------------------------------------------------------------------------ production


def test_production_without_secret_refuses_to_start():
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env({"PARLEY_ENV": "production"}, dotenv=None)
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env({"PARLEY_ENV": "production", "SECRET_KEY": "short"}, dotenv=None)
    ok = Settings.from_env({"PARLEY_ENV": "production", "SECRET_KEY": "s" * 32}, dotenv=None)
    assert ok.is_production
    assert not ok.flag("introspection_enabled") and not ok.flag("graphiql_enabled")
    assert not ok.flag("field_suggestions_enabled")


def test_the_cli_refuses_production_without_secret(monkeypatch, tmp_path):
    import server

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("PARLEY_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    assert server.main(["serve"]) == 2


INTROSPECTION = "{ __schema { queryType { name } } }"


async def test_production_turns_off_introspection_graphiql_and_suggestions(app_factory):
    _, gql = await app_factory(parley_env="production")

    introspection = await gql.error(INTROSPECTION)
    assert error_code(introspection) == "GRAPHQL_VALIDATION_FAILED"
    typo = await gql.error("{ mee { id } }")
    assert error_code(typo) == "GRAPHQL_VALIDATION_FAILED"
    assert "Did you mean" not in typo["message"]
    graphiql = await gql.client.get("/graphql", headers={"accept": "text/html"})
    assert graphiql.status_code == 400
    assert "text/html" not in graphiql.headers["content-type"]


async def test_development_keeps_them_on(app_factory):
    _, gql = await app_factory(parley_env="development")

    assert (await gql.ok(INTROSPECTION)) == {"__schema": {"queryType": {"name": "Query"}}}
    typo = await gql.error("{ mee { id } }")
    assert "Did you mean" in typo["message"]
    graphiql = await gql.client.get("/graphql", headers={"accept": "text/html"})
    assert graphiql.status_code == 200 and graphiql.headers["content-type"].startswith("text/html")
