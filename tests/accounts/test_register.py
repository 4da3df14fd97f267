"""register: validation, uniqueness, the signed-in payload, audit."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db import models
from tests.accounts.conftest import PASSWORD, REGISTER, audit_kinds, count, register, rows, services
from tests.conftest import error_code


async def test_register_signs_in_and_audits(app, gql, published):
    # when
    payload = await register(gql, "Alice_1", displayName="  Alice  ")

    # then: a user, a live session, working tokens
    assert payload["user"]["username"] == "Alice_1"
    assert payload["user"]["displayName"] == "Alice"
    assert payload["user"]["isAdmin"] is False
    assert payload["session"]["current"] is True
    assert payload["session"]["ipAddress"] == "127.0.0.1"
    me = await gql.ok("{ me { id username } }", token=payload["accessToken"])
    assert me["me"] == {"id": payload["user"]["id"], "username": "Alice_1"}
    users = await rows(app, select(models.User))
    assert [(u.username, u.username_key) for u in users] == [("Alice_1", "alice_1")]
    assert users[0].password_hash.startswith("$argon2id$")
    assert PASSWORD not in users[0].password_hash
    sessions = await rows(app, select(models.AuthSession))
    assert len(sessions) == 1 and sessions[0].user_id == users[0].id
    assert sessions[0].refresh_hash != payload["refreshToken"]  # stored hashed only
    assert await audit_kinds(app) == ["register"]
    assert [e["type"] for e in published.of_type("audit")] == ["audit"]


async def test_display_name_defaults_to_username(gql):
    payload = await register(gql, "bob")
    assert payload["user"]["displayName"] == "bob"


async def test_taken_username_is_conflict_case_insensitively(app, gql, published):
    await register(gql, "carol")
    published.events.clear()

    err = await gql.error(REGISTER, {"input": {"username": "CAROL", "password": PASSWORD}})

    assert error_code(err) == "CONFLICT"
    assert err["extensions"]["field"] == "username"
    assert await count(app, models.User) == 1
    assert await count(app, models.AuthSession) == 1
    assert published.events == []


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 33, "has space", "emoji😀", "semi;colon", "", "   "],
)
async def test_invalid_usernames_are_refused(app, gql, username):
    err = await gql.error(REGISTER, {"input": {"username": username, "password": PASSWORD}})
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "username"
    assert await count(app, models.User) == 0


async def test_username_length_bounds_accept_3_and_32(gql):
    assert (await register(gql, "abc"))["user"]["username"] == "abc"
    assert (await register(gql, "x" * 32))["user"]["username"] == "x" * 32


@pytest.mark.parametrize("length", [7, 129])
async def test_password_length_outside_8_to_128_is_refused(app, gql, length):
    err = await gql.error(REGISTER, {"input": {"username": "dave", "password": "p" * length}})
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "password"
    assert await count(app, models.User) == 0
    assert await audit_kinds(app) == []


async def test_password_length_8_and_128_are_accepted_and_log_in(gql):
    for name, length in (("eight", 8), ("long", 128)):
        await register(gql, name, "p" * length)
        data = await gql.ok(
            "mutation($i: LoginInput!) { login(input: $i) { user { username } } }",
            {"i": {"username": name, "password": "p" * length}},
        )
        assert data["login"]["user"]["username"] == name


@pytest.mark.parametrize("display_name", ["", "   ", "x" * 65, "bad\u0000name"])
async def test_invalid_display_names_are_refused(app, gql, display_name):
    err = await gql.error(
        REGISTER, {"input": {"username": "erin", "password": PASSWORD, "displayName": display_name}}
    )
    assert error_code(err) == "BAD_USER_INPUT"
    assert err["extensions"]["field"] == "displayName"
    assert await count(app, models.User) == 0


async def test_register_works_with_a_bad_token_present(gql):
    data = await gql.ok(
        REGISTER, {"input": {"username": "frank", "password": PASSWORD}}, token="not-a-token"
    )
    assert data["register"]["user"]["username"] == "frank"


async def test_register_stores_user_agent(app, gql):
    await gql.ok(
        REGISTER, {"input": {"username": "gina", "password": PASSWORD}}, headers={"User-Agent": "Tests/1.0"}
    )
    (session,) = await rows(app, select(models.AuthSession))
    assert session.user_agent == "Tests/1.0"
    assert services(app) is not None
