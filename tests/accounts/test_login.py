"""login: fresh session per login, one message for every failure, audited failures."""
from __future__ import annotations

import statistics
import time

from argon2 import PasswordHasher
from sqlalchemy import select

from db import models
from tests.accounts.conftest import (
    PASSWORD,
    audit_kinds,
    count,
    execute,
    login,
    login_error,
    register,
    rows,
)
from tests.conftest import error_code


async def test_every_login_creates_a_fresh_session(app, gql, published):
    registered = await register(gql, "alice")
    published.events.clear()

    first = await login(gql, "alice", headers={"User-Agent": "Phone"})
    second = await login(gql, "ALICE")  # usernames are case-insensitive

    ids = {registered["session"]["id"], first["session"]["id"], second["session"]["id"]}
    assert len(ids) == 3
    assert first["user"]["id"] == registered["user"]["id"]
    assert first["session"]["userAgent"] == "Phone"
    assert await count(app, models.AuthSession) == 3
    assert await audit_kinds(app) == ["register", "login", "login"]
    assert len(published.of_type("audit")) == 2
    for payload in (first, second):
        me = await gql.ok("{ me { username } }", token=payload["accessToken"])
        assert me["me"]["username"] == "alice"


async def test_wrong_password_and_unknown_user_fail_alike(app, gql, published):
    await register(gql, "bob")
    published.events.clear()

    wrong = await login_error(gql, "bob", "not the password")
    unknown = await login_error(gql, "nobody", "not the password")
    too_long = await login_error(gql, "bob", "x" * 500)

    for err in (wrong, unknown, too_long):
        assert error_code(err) == "UNAUTHENTICATED"
        assert err["message"] == "Invalid username or password"
        assert set(err["extensions"]) == {"code"}
    assert await count(app, models.AuthSession) == 1  # only registration's
    failed = await rows(app, select(models.AuditEvent).where(models.AuditEvent.kind == "login_failed"))
    assert len(failed) == 3
    bob = (await rows(app, select(models.User)))[0]
    assert [f.actor_id for f in failed] == [bob.id, None, bob.id]
    assert all(f.ip_address == "127.0.0.1" for f in failed)
    assert len(published.of_type("audit")) == 3


async def test_unknown_user_costs_the_same_time_as_a_wrong_password(gql):
    await register(gql, "carol")

    async def timed(username: str) -> float:
        started = time.perf_counter()
        await login_error(gql, username, "wrong password!")
        return time.perf_counter() - started

    known: list[float] = []
    unknown: list[float] = []
    for _ in range(7):  # interleaved, so load on the machine hits both alike
        known.append(await timed("carol"))
        unknown.append(await timed("nobody-here"))

    # skipping the argon2 verification for unknown users would make this ratio ~0.1
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


async def test_login_works_with_an_expired_token_present(app, gql):
    await register(gql, "dave")
    payload = await login(gql, "dave", token="garbage.token.value")
    assert payload["user"]["username"] == "dave"


async def test_login_rehashes_outdated_hashes(app, gql):
    await register(gql, "erin")
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    await execute(app, models.User.__table__.update().values(password_hash=weak))

    await login(gql, "erin")

    (user,) = await rows(app, select(models.User))
    assert user.password_hash != weak and "m=19456,t=2,p=1" in user.password_hash
