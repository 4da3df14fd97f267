"""Admin gating, adminStats, auditLog, and the create-admin command."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from auth import audit
from db import models
from db.engine import transaction
from tests.accounts.conftest import execute, register, services
from tests.conftest import error_code
from tests.factories import create_user

ROOT = Path(__file__).resolve().parents[2]
STATS = (
    "{ adminStats { at instances onlineUsers connections subscriptions messagesLastMinute "
    "totalUsers totalConversations totalGroups totalMessages } }"
)
AUDIT = (
    "query($kind: String, $first: Int, $after: String) { auditLog(kind: $kind, first: $first, after: $after) { "
    "edges { cursor node { id kind detail ipAddress actor { username } } } pageInfo { hasNextPage endCursor } } }"
)


@pytest.mark.parametrize("query", [STATS, AUDIT])
async def test_admin_fields_are_gated(app, gql, query):
    member = await create_user(app, "member")

    anonymous = await gql.error(query)
    bad_token = await gql.error(query, token="bad")
    non_admin = await gql.error(query, token=member.token)

    assert error_code(anonymous) == "UNAUTHENTICATED"
    assert (error_code(bad_token), bad_token["message"]) == ("UNAUTHENTICATED", "invalid token")
    assert error_code(non_admin) == "FORBIDDEN"


async def test_admin_stats(app, gql):
    admin = await create_user(app, "root", admin=True)
    await create_user(app, "member")

    stats = (await gql.ok(STATS, token=admin.token))["adminStats"]

    assert stats["at"].endswith("+00:00")
    del stats["at"]
    assert stats == {
        "instances": 1, "onlineUsers": 0, "connections": 0, "subscriptions": 0, "messagesLastMinute": 0,
        "totalUsers": 2, "totalConversations": 0, "totalGroups": 0, "totalMessages": 0,
    }


async def test_admin_stats_uses_the_cluster_snapshot(app, gql):
    admin = await create_user(app, "root", admin=True)

    class Snapshot:  # the interface realtime provides as extras["stats"]
        async def snapshot(self):
            return {"instances": 3, "connections": 7, "subscriptions": 11, "onlineUsers": 5}

    extras = services(app).extras
    original = extras.get("stats")
    extras["stats"] = Snapshot()
    try:
        stats = (await gql.ok(STATS, token=admin.token))["adminStats"]
    finally:
        if original is None:
            extras.pop("stats", None)
        else:
            extras["stats"] = original
    assert (stats["instances"], stats["connections"], stats["subscriptions"], stats["onlineUsers"]) == (3, 7, 11, 5)


async def test_a_demoted_admin_loses_access_at_once(app, gql):
    admin = await create_user(app, "root", admin=True)
    await execute(app, update(models.User).values(is_admin=False))
    assert error_code(await gql.error(STATS, token=admin.token)) == "FORBIDDEN"


async def test_audit_log_newest_first_with_kind_filter_and_pages(app, gql):
    admin = await create_user(app, "root", admin=True)
    await register(gql, "alice")
    await gql.error(
        "mutation { login(input: {username: \"alice\", password: \"wrong password\"}) { accessToken } }"
    )
    svc = services(app)
    async with transaction(svc.db) as tx:  # what the group engineer records for a role change
        await audit.record(tx.session, audit.ROLE_CHANGED, admin.id, "10.0.0.1", "group=1 user=2 MEMBER->ADMIN")

    data = await gql.ok(AUDIT, {}, token=admin.token)
    kinds = [e["node"]["kind"] for e in data["auditLog"]["edges"]]
    assert kinds == ["role_changed", "login_failed", "register"]
    newest = data["auditLog"]["edges"][0]["node"]
    assert newest["actor"] == {"username": "root"} and newest["ipAddress"] == "10.0.0.1"

    first_page = await gql.ok(AUDIT, {"first": 2}, token=admin.token)
    assert [e["node"]["kind"] for e in first_page["auditLog"]["edges"]] == ["role_changed", "login_failed"]
    assert first_page["auditLog"]["pageInfo"]["hasNextPage"] is True
    end = first_page["auditLog"]["pageInfo"]["endCursor"]
    rest = await gql.ok(AUDIT, {"first": 2, "after": end}, token=admin.token)
    assert [e["node"]["kind"] for e in rest["auditLog"]["edges"]] == ["register"]
    assert rest["auditLog"]["pageInfo"]["hasNextPage"] is False

    filtered = await gql.ok(AUDIT, {"kind": "login_failed"}, token=admin.token)
    (only,) = filtered["auditLog"]["edges"]
    assert only["node"]["kind"] == "login_failed" and "alice" in only["node"]["detail"]

    err = await gql.error(AUDIT, {"after": "bogus!"}, token=admin.token)
    assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "after"
    err = await gql.error(AUDIT, {"first": 101}, token=admin.token)
    assert error_code(err) == "BAD_USER_INPUT" and err["extensions"]["field"] == "first"


# --------------------------------------------------------------------- create-admin


def _cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROADCAST_URL", "SECRET_KEY"}}
    environment.update({"DATA_DIR": str(data_dir), "PARLEY_ENV": "development"}, **(env or {}))
    return subprocess.run(
        [sys.executable, "server.py", "create-admin", *args], cwd=ROOT, env=environment,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def _admin_rows(data_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(data_dir / "parley.db") as db:
        return db.execute("SELECT username, is_admin FROM users ORDER BY id").fetchall()


def test_create_admin_cli(tmp_path):
    # a new admin, password from the command line
    created = _cli(tmp_path, "boss", "--password", "a long enough password")
    assert created.returncode == 0, created.stderr
    assert "created admin boss" in created.stdout
    assert _admin_rows(tmp_path) == [("boss", 1)]

    # already an admin: nothing changes
    again = _cli(tmp_path, "BOSS")
    assert again.returncode == 0 and "already an admin" in again.stdout

    # a new admin needs a password; refused without writing
    missing = _cli(tmp_path, "nopass")
    assert missing.returncode == 1 and "password" in missing.stderr
    short = _cli(tmp_path, "short", env={"PARLEY_ADMIN_PASSWORD": "1234567"})
    assert short.returncode == 1
    assert _admin_rows(tmp_path) == [("boss", 1)]

    # password from the environment
    env_made = _cli(tmp_path, "second", env={"PARLEY_ADMIN_PASSWORD": "another long password"})
    assert env_made.returncode == 0, env_made.stderr
    with sqlite3.connect(tmp_path / "parley.db") as db:
        db.execute(
            "INSERT INTO users (username, username_key, display_name, password_hash, is_admin, presence_choice, "
            "created_at) VALUES ('plain', 'plain', 'Plain', 'x', 0, 'ONLINE', '2024-01-01 00:00:00.000000')"
        )

    # an existing user is promoted, and the promotion is audited
    promoted = _cli(tmp_path, "plain")
    assert promoted.returncode == 0 and "promoted plain" in promoted.stdout
    assert _admin_rows(tmp_path) == [("boss", 1), ("second", 1), ("plain", 1)]
    with sqlite3.connect(tmp_path / "parley.db") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM audit_events ORDER BY id")]
    assert kinds == ["admin_granted", "admin_granted", "admin_granted"]


async def test_create_or_promote_admin_then_login(app, gql, settings):
    from auth.accounts import create_or_promote_admin

    message = await create_or_promote_admin(settings, services(app).db, "chief", "chief password 1")
    assert message == "created admin chief"

    data = await gql.ok(
        'mutation { login(input: {username: "chief", password: "chief password 1"}) { user { isAdmin } accessToken } }'
    )
    assert data["login"]["user"]["isAdmin"] is True
    stats = await gql.ok("{ adminStats { totalUsers } }", token=data["login"]["accessToken"])
    assert stats == {"adminStats": {"totalUsers": 1}}
