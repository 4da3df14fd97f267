"""Limits come from settings: lowered here to show the boundary moves with them."""
from __future__ import annotations

import secrets

import pytest

from tests.chat.helpers import MESSAGES, SEND, send, start
from tests.conftest import error_code
from tests.factories import create_user


@pytest.fixture
def settings(settings_factory):
    return settings_factory(
        max_message_length=20, max_page_size=3, rate_limit_enabled=True, rate_limit_send_message="4/minute",
        channel_prefix=f"parley-test-limits-{secrets.token_hex(4)}",
    )


async def test_body_and_page_limits_follow_settings(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)

    assert len((await send(gql, alice, cid, "x" * 20))["body"]) == 20
    err = await gql.error(SEND, {"i": {"conversationId": cid, "body": "x" * 21}}, token=alice.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "body")

    assert len((await gql.ok(MESSAGES, {"c": cid, "first": 3}, token=alice.token))["messages"]["edges"]) == 1
    err = await gql.error(MESSAGES, {"c": cid, "first": 4}, token=alice.token)
    assert (error_code(err), err["extensions"]["field"]) == ("BAD_USER_INPUT", "first")


async def test_sending_is_rate_limited_per_user(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    for i in range(4):
        await send(gql, alice, cid, f"m{i}")

    err = await gql.error(SEND, {"i": {"conversationId": cid, "body": "one too many"}}, token=alice.token)

    assert error_code(err) == "RATE_LIMITED"
    assert err["extensions"]["retryAfter"] >= 1
    assert (await send(gql, bob, cid, "bob has his own"))["body"] == "bob has his own"
    data = await gql.ok(MESSAGES, {"c": cid, "last": 3}, token=alice.token)
    assert [e["node"]["body"] for e in data["messages"]["edges"]] == ["m2", "m3", "bob has his own"]
