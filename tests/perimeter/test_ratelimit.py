"""Rate limits: exact boundaries, 429 for the request budget, the login throttle that
nobody can turn against someone else, sharing through Redis, falling back to memory."""
from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import select

from auth.ratelimit import RateLimiter, client_key
from db import models
from errors import RateLimited
from tests.accounts.conftest import LOGIN, REGISTER
from tests.conftest import TEST_REDIS_URL, error_code, make_settings
from tests.factories import create_user

PASSWORD = "correct horse battery"
TRUSTED = {"trusted_proxies": ("127.0.0.1",)}


def _from(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}


async def _login(gql, username: str, password: str, address: str) -> dict:
    return await gql(LOGIN, {"input": {"username": username, "password": password}}, headers=_from(address))


def _code(body: dict) -> str | None:
    return error_code(body["errors"][0]) if body.get("errors") else None


async def _audit(app, kind: str) -> list[models.AuditEvent]:
    async with app.state.parley.services.db.session() as s:
        return list(
            (await s.execute(select(models.AuditEvent).where(models.AuditEvent.kind == kind))).scalars().all()
        )


async def test_http_request_budget_is_exact_and_answers_429(app_factory):
    app, gql = await app_factory(rate_limit_enabled=True, rate_limit_http_requests="3/minute")
    client = gql.client

    statuses = [(await client.post("/graphql", json={"query": "{ __typename }"})).status_code for _ in range(3)]
    refused = await client.post("/graphql", json={"query": "{ __typename }"})
    refused_get = await client.get("/graphql", params={"query": "{ __typename }"})

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and refused_get.status_code == 429
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 60
    (error,) = refused.json()["errors"]
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": retry}
    assert refused.headers["x-content-type-options"] == "nosniff"
    (row,) = await _audit(app, "rate_limited")  # audited once, not per refusal
    assert row.ip_address == "127.0.0.1" and "class=http" in row.detail
    # another client address has its own budget
    other = await client.post("/graphql", json={"query": "{ __typename }"}, headers=_from("198.51.100.1"))
    assert other.status_code == 429  # untrusted peer: X-Forwarded-For is ignored


async def test_request_budget_per_forwarded_address_behind_a_trusted_proxy(app_factory):
    _, gql = await app_factory(rate_limit_enabled=True, rate_limit_http_requests="2/minute", **TRUSTED)
    client = gql.client
    async def status(address: str) -> int:
        response = await client.post("/graphql", json={"query": "{ __typename }"}, headers=_from(address))
        return response.status_code

    assert [await status("1.1.1.1") for _ in range(3)] == [200, 200, 429]
    assert await status("2.2.2.2") == 200


async def test_the_retry_after_header_is_readable_cross_origin(app_factory):
    _, gql = await app_factory(
        rate_limit_enabled=True, rate_limit_http_requests="1/minute", cors_origins=("https://chat.example",)
    )
    headers = {"origin": "https://chat.example"}
    await gql.client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    refused = await gql.client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == "https://chat.example"
    assert "retry-after" in refused.headers["access-control-expose-headers"].lower()


async def test_auth_class_limits_register_and_login_per_address(app_factory):
    app, gql = await app_factory(rate_limit_enabled=True, rate_limit_auth="3/minute", **TRUSTED)
    bad = {"input": {"username": "x", "password": PASSWORD}}  # refused input still spends the budget

    codes = [_code(await gql(REGISTER, bad, headers=_from("1.1.1.1"))) for _ in range(3)]
    refused = await gql(LOGIN, {"input": {"username": "x", "password": PASSWORD}}, headers=_from("1.1.1.1"))

    assert codes == ["BAD_USER_INPUT"] * 3
    assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= refused["errors"][0]["extensions"]["retryAfter"] <= 60
    assert refused["data"] is None
    assert _code(await gql(REGISTER, bad, headers=_from("2.2.2.2"))) == "BAD_USER_INPUT"
    assert await _audit(app, "login_failed") == []  # refused before any password check


async def test_aliased_logins_each_spend_the_auth_budget(app_factory):
    app, gql = await app_factory(rate_limit_enabled=True, rate_limit_auth="2/minute")
    await create_user(app, "alice")
    query = "mutation { " + " ".join(
        f'l{i}: login(input: {{username: "alice", password: "{PASSWORD}"}}) {{ accessToken }}' for i in range(3)
    ) + " }"

    body = await gql(query)

    assert [error_code(e) for e in body["errors"]] == ["RATE_LIMITED"]
    assert body["errors"][0]["path"] == ["l2"]


async def test_default_class_per_user(app_factory):
    app, gql = await app_factory(rate_limit_enabled=True, rate_limit_default="3/minute")
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")

    for _ in range(3):
        await gql.ok("{ me { id } }", token=alice.token)
    refused = await gql("{ me { id } }", token=alice.token)

    assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert refused["data"] is None
    await gql.ok("{ me { id } }", token=bob.token)
    (row,) = await _audit(app, "rate_limited")
    assert row.actor_id == alice.id and "class=default" in row.detail


async def test_limiter_api_for_resolvers(app_factory):
    app, _ = await app_factory(rate_limit_enabled=True, rate_limit_send_message="3/10second")
    limiter = app.state.parley.services.limiter
    key = client_key(type("V", (), {"user_id": 42})(), "127.0.0.1")
    assert key == "user:42"

    for _ in range(3):
        await limiter.hit("send_message", key)
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("send_message", key)

    assert 1 <= refused.value.retry_after <= 10
    assert refused.value.extensions == {"code": "RATE_LIMITED", "retryAfter": refused.value.retry_after}
    await limiter.hit("send_message", "user:43")


# --------------------------------------------------------------------- login throttle

THROTTLE = {
    "rate_limit_enabled": True, "rate_limit_login_user_address": "3/minute", "rate_limit_login_user": "5/hour",
    "rate_limit_auth": "100/minute", **TRUSTED,
}


async def test_failed_logins_lock_the_pair_even_for_the_right_password(app_factory):
    app, gql = await app_factory(**THROTTLE)
    await create_user(app, "alice")

    failures = [_code(await _login(gql, "alice", "wrong password", "1.1.1.1")) for _ in range(3)]
    locked = await _login(gql, "alice", PASSWORD, "1.1.1.1")

    assert failures == ["UNAUTHENTICATED"] * 3
    assert locked["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= locked["errors"][0]["extensions"]["retryAfter"] <= 60
    async with app.state.parley.services.db.session() as s:
        assert len((await s.execute(select(models.AuthSession))).scalars().all()) == 1  # the factory's
    assert len(await _audit(app, "login_failed")) == 3
    assert len(await _audit(app, "rate_limited")) == 1


async def test_the_lockout_cannot_be_triggered_for_another_address(app_factory):
    app, gql = await app_factory(**THROTTLE)
    await create_user(app, "alice")
    for _ in range(4):
        await _login(gql, "alice", "wrong password", "6.6.6.6")  # the attacker

    owner = await _login(gql, "alice", PASSWORD, "1.1.1.1")

    assert "errors" not in owner, owner
    assert owner["data"]["login"]["user"]["username"] == "alice"


async def test_a_spent_username_budget_still_admits_clean_addresses(app_factory):
    app, gql = await app_factory(**THROTTLE)
    await create_user(app, "alice")
    for address in ("6.6.6.1", "6.6.6.2"):  # 5 failures in all spend the username budget
        for _ in range(3 if address.endswith("1") else 2):
            await _login(gql, "alice", "wrong password", address)

    dirty = await _login(gql, "alice", PASSWORD, "6.6.6.2")  # failed recently
    clean = await _login(gql, "alice", PASSWORD, "1.1.1.1")

    assert _code(dirty) == "RATE_LIMITED"
    assert "errors" not in clean, clean


async def test_unknown_usernames_are_throttled_alike(app_factory):
    _, gql = await app_factory(**THROTTLE)
    bodies = [await _login(gql, "nobody", "wrong password", "1.1.1.1") for _ in range(4)]
    assert [_code(b) for b in bodies] == ["UNAUTHENTICATED"] * 3 + ["RATE_LIMITED"]


async def test_a_successful_login_clears_the_pair(app_factory):
    app, gql = await app_factory(**THROTTLE)
    await create_user(app, "alice")
    for _ in range(2):
        await _login(gql, "alice", "wrong password", "1.1.1.1")
    assert "errors" not in await _login(gql, "alice", PASSWORD, "1.1.1.1")
    for _ in range(2):
        assert _code(await _login(gql, "alice", "wrong password", "1.1.1.1")) == "UNAUTHENTICATED"


async def test_limits_off_switches_everything_off(app_factory):
    app, gql = await app_factory(
        rate_limit_enabled=False, rate_limit_http_requests="1/minute", rate_limit_login_user_address="1/minute",
        rate_limit_default="1/minute",
    )
    await create_user(app, "alice")
    for _ in range(3):
        assert _code(await _login(gql, "alice", "wrong password", "1.1.1.1")) == "UNAUTHENTICATED"
    assert "errors" not in await _login(gql, "alice", PASSWORD, "1.1.1.1")
    assert await _audit(app, "rate_limited") == []


# ------------------------------------------------------------------- storage backends


def _limiter_settings(tmp_path, **overrides):
    base = make_settings("embedded", tmp_path, rate_limit_enabled=True, rate_limit_default="3/minute")
    return replace(base, channel_prefix=f"parley-test-{uuid.uuid4().hex[:12]}", **overrides)


async def test_unreachable_redis_falls_back_to_memory(tmp_path):
    limiter = RateLimiter(_limiter_settings(tmp_path, broadcast_url="redis://127.0.0.1:1/0"))
    try:
        started = time.monotonic()
        for _ in range(3):
            await limiter.hit("default", "user:1")
        with pytest.raises(RateLimited):
            await limiter.hit("default", "user:1")
        assert not limiter.shared
        assert time.monotonic() - started < 3
    finally:
        await limiter.close()


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL not set: Redis tests skipped")
async def test_limits_are_shared_across_instances_through_redis(tmp_path):
    settings = _limiter_settings(tmp_path, broadcast_url=TEST_REDIS_URL)
    first, second = RateLimiter(settings), RateLimiter(settings)
    try:
        await first.hit("default", "user:1")
        await second.hit("default", "user:1")
        await first.hit("default", "user:1")
        with pytest.raises(RateLimited):
            await second.hit("default", "user:1")
        assert first.shared and second.shared
        # keys live under the deployment prefix
        import redis.asyncio as redis

        client = redis.Redis.from_url(TEST_REDIS_URL)
        try:
            keys = await client.keys(f"{settings.channel_prefix}:ratelimit:*")
            assert keys
        finally:
            await client.aclose()
    finally:
        await first.close()
        await second.close()
