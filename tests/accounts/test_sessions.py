"""sessions, logout, revokeSession, revokeOtherSessions, changePassword, last-active."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db import models
from tests.accounts.conftest import PASSWORD, audit_kinds, execute, login, login_error, register, rows
from tests.conftest import error_code
from tests.factories import create_user

SESSIONS = "{ sessions { id current ipAddress userAgent createdAt lastActiveAt expiresAt } }"


async def _live_ids(app, user_id: int) -> list[int]:
    found = await rows(
        app,
        select(models.AuthSession.id).where(
            models.AuthSession.user_id == user_id, models.AuthSession.revoked_at.is_(None)
        ).order_by(models.AuthSession.id),
    )
    return list(found)


async def test_sessions_lists_live_sessions_with_current(app, gql):
    first = await register(gql, "alice")
    second = await login(gql, "alice", headers={"User-Agent": "Laptop"})
    third = await login(gql, "alice")
    await gql.ok("mutation { logout }", token=third["accessToken"])

    data = await gql.ok(SESSIONS, token=second["accessToken"])

    listed = {s["id"]: s for s in data["sessions"]}
    assert set(listed) == {first["session"]["id"], second["session"]["id"]}
    assert listed[second["session"]["id"]]["current"] is True
    assert listed[first["session"]["id"]]["current"] is False
    assert listed[second["session"]["id"]]["userAgent"] == "Laptop"
    assert listed[second["session"]["id"]]["ipAddress"] == "127.0.0.1"


async def test_sessions_needs_a_viewer(gql):
    err = await gql.error(SESSIONS)
    assert error_code(err) == "UNAUTHENTICATED"


async def test_logout_ends_the_session_at_once(app, gql, published):
    alice = await create_user(app, "alice")

    assert await gql.ok("mutation { logout }", token=alice.token) == {"logout": True}

    err = await gql.error("{ me { id } }", token=alice.token)
    assert error_code(err) == "UNAUTHENTICATED" and err["message"] == "session revoked"
    assert published.of_type("revoked") == [
        {"type": "revoked", "session_ids": [alice.session_id], "reason": "session revoked"}
    ]
    assert await audit_kinds(app) == ["logout"]


async def test_logout_without_a_token(app, gql, published):
    err = await gql.error("mutation { logout }")
    assert error_code(err) == "UNAUTHENTICATED"
    err = await gql.error("mutation { logout }", token="bad")
    assert err["message"] == "invalid token"
    assert published.events == []


async def test_revoke_own_other_session(app, gql, published):
    first = await register(gql, "alice")
    second = await login(gql, "alice")
    published.events.clear()

    data = await gql.ok(
        "mutation($id: ID!) { revokeSession(id: $id) }", {"id": second["session"]["id"]}, token=first["accessToken"]
    )

    assert data == {"revokeSession": True}
    err = await gql.error("{ me { id } }", token=second["accessToken"])
    assert err["message"] == "session revoked"
    assert (await gql.ok("{ me { username } }", token=first["accessToken"]))["me"]["username"] == "alice"
    session_id = int(second["session"]["id"].split("_")[1])
    assert published.of_type("revoked") == [
        {"type": "revoked", "session_ids": [session_id], "reason": "session revoked"}
    ]
    assert (await audit_kinds(app))[-1] == "session_revoked"


async def test_revoke_session_of_another_user_is_not_found(app, gql, published):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")

    err = await gql.error(
        "mutation($id: ID!) { revokeSession(id: $id) }", {"id": f"s_{bob.session_id}"}, token=alice.token
    )

    assert error_code(err) == "NOT_FOUND"
    assert await _live_ids(app, bob.id) == [bob.session_id]
    assert published.events == []
    assert await audit_kinds(app) == []


async def test_revoke_session_unknown_revoked_and_malformed_ids(app, gql):
    alice = await create_user(app, "alice")
    query = "mutation($id: ID!) { revokeSession(id: $id) }"
    assert error_code(await gql.error(query, {"id": "s_999999"}, token=alice.token)) == "NOT_FOUND"
    assert error_code(await gql.error(query, {"id": f"u_{alice.id}"}, token=alice.token)) == "NOT_FOUND"
    err = await gql.error(query, {"id": "garbage"}, token=alice.token)
    assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "id"
    assert await _live_ids(app, alice.id) == [alice.session_id]


async def test_revoke_other_sessions(app, gql, published):
    first = await register(gql, "alice")
    others = [await login(gql, "alice") for _ in range(2)]
    bob = await create_user(app, "bob")
    published.events.clear()

    data = await gql.ok("mutation { revokeOtherSessions }", token=first["accessToken"])

    assert data == {"revokeOtherSessions": 2}
    for other in others:
        err = await gql.error("{ me { id } }", token=other["accessToken"])
        assert err["message"] == "session revoked"
    assert (await gql.ok("{ me { username } }", token=first["accessToken"]))["me"]["username"] == "alice"
    assert await _live_ids(app, bob.id) == [bob.session_id]
    (event,) = published.of_type("revoked")
    assert sorted(event["session_ids"]) == sorted(int(o["session"]["id"].split("_")[1]) for o in others)
    # nothing left to end
    assert await gql.ok("mutation { revokeOtherSessions }", token=first["accessToken"]) == {"revokeOtherSessions": 0}


CHANGE = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }"


async def test_change_password_ends_other_sessions(app, gql, published):
    first = await register(gql, "alice")
    other = await login(gql, "alice")
    published.events.clear()

    data = await gql.ok(CHANGE, {"c": PASSWORD, "n": "a brand new secret"}, token=first["accessToken"])

    assert data == {"changePassword": True}
    assert (await gql.error("{ me { id } }", token=other["accessToken"]))["message"] == "session revoked"
    assert (await gql.ok("{ me { username } }", token=first["accessToken"]))["me"]["username"] == "alice"
    assert error_code(await login_error(gql, "alice", PASSWORD)) == "UNAUTHENTICATED"
    await login(gql, "alice", "a brand new secret")
    assert len(published.of_type("revoked")) == 1
    assert "password_changed" in await audit_kinds(app)


async def test_change_password_refusals_write_nothing_but_the_audit(app, gql, published):
    first = await register(gql, "alice")
    other = await login(gql, "alice")
    (before,) = await rows(app, select(models.User.password_hash))
    published.events.clear()

    wrong = await gql.error(CHANGE, {"c": "not my password", "n": "a brand new secret"}, token=first["accessToken"])
    short = await gql.error(CHANGE, {"c": PASSWORD, "n": "short"}, token=first["accessToken"])
    anonymous = await gql.error(CHANGE, {"c": PASSWORD, "n": "a brand new secret"})

    assert (error_code(wrong), wrong["extensions"]["field"]) == ("BAD_USER_INPUT", "currentPassword")
    assert (error_code(short), short["extensions"]["field"]) == ("BAD_USER_INPUT", "newPassword")
    assert error_code(anonymous) == "UNAUTHENTICATED"
    assert await rows(app, select(models.User.password_hash)) == [before]
    assert (await gql.ok("{ me { username } }", token=other["accessToken"]))["me"]["username"] == "alice"
    assert published.of_type("revoked") == []
    assert (await audit_kinds(app))[-1] == "login_failed"


async def test_last_active_moves_at_most_once_a_minute(app, gql):
    alice = await create_user(app, "alice")
    recent = models.utcnow() - timedelta(seconds=30)
    await execute(app, update(models.AuthSession).values(last_active_at=recent))

    await gql.ok("{ me { id } }", token=alice.token)
    (row,) = await rows(app, select(models.AuthSession))
    assert row.last_active_at == recent

    old = models.utcnow() - timedelta(seconds=61)
    await execute(app, update(models.AuthSession).values(last_active_at=old))
    await gql.ok("{ me { id } }", token=alice.token)
    (row,) = await rows(app, select(models.AuthSession))
    assert row.last_active_at > old + timedelta(seconds=60)


async def test_expired_sessions_are_refused_and_not_listed(app, gql):
    alice = await create_user(app, "alice")
    past = models.utcnow() - timedelta(seconds=1)
    await execute(app, update(models.AuthSession).values(expires_at=past))

    err = await gql.error(SESSIONS, token=alice.token)

    assert error_code(err) == "UNAUTHENTICATED"
