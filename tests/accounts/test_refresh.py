"""refreshToken: rotation, the grace for concurrent tabs, theft detection."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select, update

from db import models
from tests.accounts.conftest import REFRESH, audit_kinds, execute, register, rows
from tests.conftest import error_code


async def _refresh(gql, token):
    return (await gql.ok(REFRESH, {"token": token}))["refreshToken"]


async def _session_row(app):
    (row,) = await rows(app, select(models.AuthSession))
    return row


async def _age_rotation(app, seconds: int) -> None:
    """Move the last rotation into the past (beyond or within the grace)."""
    row = await _session_row(app)
    await execute(
        app, update(models.AuthSession).values(rotated_at=row.rotated_at - timedelta(seconds=seconds))
    )


async def test_refresh_rotates_the_pair(app, gql, published):
    first = await register(gql, "alice")
    published.events.clear()

    second = await _refresh(gql, first["refreshToken"])

    assert second["refreshToken"] != first["refreshToken"]
    assert second["accessToken"] != first["accessToken"]
    assert second["session"]["id"] == first["session"]["id"]
    assert second["user"]["username"] == "alice"
    me = await gql.ok("{ me { username } }", token=second["accessToken"])
    assert me["me"]["username"] == "alice"
    row = await _session_row(app)
    assert row.generation == 1 and row.revoked_at is None
    assert published.events == []


async def test_second_presentation_within_grace_returns_the_same_pair(app, gql):
    first = await register(gql, "alice")
    second = await _refresh(gql, first["refreshToken"])
    await _age_rotation(app, 5)  # still within the 10 s grace

    again = await _refresh(gql, first["refreshToken"])

    assert again["refreshToken"] == second["refreshToken"]
    assert again["accessToken"] == second["accessToken"]
    assert again["accessTokenExpiresAt"] == second["accessTokenExpiresAt"]
    assert (await _session_row(app)).generation == 1
    # and the returned token keeps rotating normally
    third = await _refresh(gql, again["refreshToken"])
    assert third["refreshToken"] != second["refreshToken"]


async def test_reuse_after_grace_revokes_the_session(app, gql, published):
    first = await register(gql, "alice")
    second = await _refresh(gql, first["refreshToken"])
    await _age_rotation(app, 11)
    published.events.clear()

    err = await gql.error(REFRESH, {"token": first["refreshToken"]})

    assert error_code(err) == "UNAUTHENTICATED"
    row = await _session_row(app)
    assert row.revoked_at is not None and row.revoked_reason == "refresh token reused"
    assert published.of_type("revoked") == [
        {"type": "revoked", "session_ids": [row.id], "reason": "session revoked"}
    ]
    assert (await audit_kinds(app))[-1] == "refresh_token_reused"
    # the thief's pair and the owner's pair are both dead
    err = await gql.error("{ me { id } }", token=second["accessToken"])
    assert err["message"] == "session revoked"
    err = await gql.error(REFRESH, {"token": second["refreshToken"]})
    assert error_code(err) == "UNAUTHENTICATED"
    assert err["message"] == "session revoked"


async def test_any_older_token_revokes_the_session(app, gql):
    first = await register(gql, "alice")
    second = await _refresh(gql, first["refreshToken"])
    await _refresh(gql, second["refreshToken"])  # first is now two rotations old

    err = await gql.error(REFRESH, {"token": first["refreshToken"]})

    assert error_code(err) == "UNAUTHENTICATED"
    assert (await _session_row(app)).revoked_at is not None


async def test_unknown_or_forged_tokens_change_nothing(app, gql, published):
    first = await register(gql, "alice")
    session_id = first["session"]["id"].split("_")[1]
    published.events.clear()

    for token in ("nonsense", f"{session_id}.0.{'A' * 43}.forgedmacforgedmacforg", first["refreshToken"] + "x"):
        err = await gql.error(REFRESH, {"token": token})
        assert error_code(err) == "UNAUTHENTICATED"
        assert err["message"] == "invalid refresh token"

    row = await _session_row(app)
    assert row.revoked_at is None and row.generation == 0
    assert published.events == []
    assert await audit_kinds(app) == ["register"]


async def test_refresh_after_logout_is_refused(app, gql):
    first = await register(gql, "alice")
    await gql.ok("mutation { logout }", token=first["accessToken"])

    err = await gql.error(REFRESH, {"token": first["refreshToken"]})

    assert error_code(err) == "UNAUTHENTICATED"
    assert err["message"] == "session revoked"


async def test_refresh_of_an_idle_expired_session_is_refused(app, gql, settings):
    first = await register(gql, "alice")
    stale = models.utcnow() - timedelta(seconds=settings.session_idle_ttl_seconds + 1)
    await execute(app, update(models.AuthSession).values(last_active_at=stale))

    err = await gql.error(REFRESH, {"token": first["refreshToken"]})

    assert error_code(err) == "UNAUTHENTICATED"
    assert (await _session_row(app)).generation == 0


async def test_refresh_works_with_an_invalid_bearer(app, gql):
    first = await register(gql, "alice")
    body = await gql(REFRESH, {"token": first["refreshToken"]}, token="expired.or.bad")
    assert "errors" not in body


async def test_concurrent_refreshes_both_succeed_with_one_pair(app, gql):
    first = await register(gql, "alice")

    results = await asyncio.gather(*(gql(REFRESH, {"token": first["refreshToken"]}) for _ in range(4)))

    assert all("errors" not in body for body in results), results
    pairs = {(b["data"]["refreshToken"]["accessToken"], b["data"]["refreshToken"]["refreshToken"]) for b in results}
    assert len(pairs) == 1
    row = await _session_row(app)
    assert row.generation == 1 and row.revoked_at is None
