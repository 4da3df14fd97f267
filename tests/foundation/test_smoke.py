from tests.conftest import error_code
from tests.factories import create_user


async def test_me_with_token(app, gql):
    alice = await create_user(app, "alice")
    data = await gql.ok("{ me { id username } }", token=alice.token)
    assert data["me"] == {"id": alice.gid, "username": "alice"}


async def test_me_without_token_is_unauthenticated(gql):
    err = await gql.error("{ me { id } }")
    assert error_code(err) == "UNAUTHENTICATED"


async def test_tampered_token(app, gql):
    alice = await create_user(app, "alice")
    err = await gql.error("{ me { id } }", token=alice.token[:-2] + "xx")
    assert error_code(err) == "UNAUTHENTICATED"
    assert err["message"] == "invalid token"


async def test_graphql_replies_are_never_cached(client):
    response = await client.post("/graphql", json={"query": "{ __typename }"})
    assert response.headers["cache-control"] == "no-store"
    assert "accept" in response.headers["vary"].lower()


async def test_variable_coercion_errors_are_bad_user_input_naming_the_variable(gql):
    missing = await gql.error("query($c: ID!) { conversation(id: $c) { id } }")
    assert missing["extensions"] == {"code": "BAD_USER_INPUT", "field": "c"}
    wrong = await gql.error("query($n: Int) { users(first: $n) { edges { cursor } } }", {"n": "x"})
    assert wrong["extensions"] == {"code": "BAD_USER_INPUT", "field": "n"}
