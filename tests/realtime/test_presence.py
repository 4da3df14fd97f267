"""Presence across devices and instances: grace, choices, dead instances, Redis outages.

Each test builds Presence objects the way resolvers.wiring does, with short timings
(grace 0.3 s, heartbeat 0.1 s, so an instance expires 0.3 s after its last heartbeat).
"Instances" are Presence objects with different ids sharing one Redis (TEST_REDIS_URL,
keys under a prefix unique to the test, deleted afterwards; never flushed). Events are
read where subscribers read them: the hub's presence channel. The database side
(`resolvers.presence`) is tested against the app's real database.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select, update

from db import models
from realtime.events import PRESENCE_CHANNEL, Publisher
from realtime.hub import Hub
from realtime.presence import Presence, create_redis
from resolvers.presence import choice_loader, last_seen_writer
from settings import Settings
from tests.factories import create_user
from tests.realtime.conftest import delete_prefixed_keys

if TYPE_CHECKING:
    from tests.realtime.conftest import RedisServer

GRACE = 0.3
HEARTBEAT = 0.1
EXPIRY = 3 * HEARTBEAT
ALICE, BOB = 11, 12


class Events:
    """Listener on the presence channel."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        self.items.append(event)
        self._changed.set()

    def on_gap(self, channel: str) -> None:
        raise AssertionError("no gap expected")

    @property
    def statuses(self) -> list[tuple[int, str]]:
        return [(e["user_id"], e["status"]) for e in self.items]

    async def wait_for(self, count: int, within: float = 3.0) -> None:
        async with asyncio.timeout(within):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()


class Env:
    """Builds Presence instances over one store (memory or a Redis prefix)."""

    def __init__(self, kind: str, hub: Hub, redis_url: str | None) -> None:
        self.kind = kind
        self.hub = hub
        self.redis_url = redis_url
        self.prefix = f"parley-test:{uuid.uuid4().hex[:10]}"
        self.settings = Settings(
            channel_prefix=self.prefix, presence_grace_seconds=GRACE, presence_heartbeat_seconds=HEARTBEAT
        )
        self.events = Events()
        self.last_seen: list[tuple[int, datetime]] = []
        self.choices: dict[int, str] = {}  # what the "database" holds
        self.instances: list[Presence] = []
        self.clients: list[Any] = []

    async def store_last_seen(self, user_id: int, when: datetime) -> None:
        self.last_seen.append((user_id, when))

    async def load_choices(self, user_ids: Any) -> dict[int, str]:
        return {u: self.choices[u] for u in user_ids if u in self.choices}

    async def instance(self, *, url: str | None = None, instance_id: str | None = None) -> Presence:
        redis = None
        if self.kind == "redis" or url is not None:
            redis = create_redis(url or self.redis_url or "")
            self.clients.append(redis)
        presence = Presence(
            self.settings, Publisher(self.hub), redis=redis, instance_id=instance_id,
            store_last_seen=self.store_last_seen, load_choices=self.load_choices,
        )
        await presence.start()
        self.instances.append(presence)
        return presence

    async def cleanup(self) -> None:
        for presence in self.instances:
            await presence.close()
        await delete_prefixed_keys(self.redis_url, self.prefix)
        for client in self.clients:
            await client.aclose()


def crash(presence: Presence) -> None:
    """Stop an instance the way a killed process does: no heartbeat, no cleanup."""
    assert presence._loop_task is not None
    presence._loop_task.cancel()
    for handle in presence._timers.values():
        handle.cancel()
    presence._timers.clear()
    presence._closed = True
    presence._sockets.clear()  # close() must not deregister anything


@contextlib.asynccontextmanager
async def open_env(kind: str, redis_url: str | None) -> AsyncIterator[Env]:
    async with Hub("memory://") as hub:
        environment = Env(kind, hub, redis_url)
        await hub.subscribe(PRESENCE_CHANNEL, environment.events)
        try:
            yield environment
        finally:
            await environment.cleanup()


@pytest.fixture(params=["memory", "redis"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    url = os.environ.get("TEST_REDIS_URL")
    if request.param == "redis" and not url:
        pytest.skip("TEST_REDIS_URL is not set: Redis presence not tested")
    async with open_env(request.param, url if request.param == "redis" else None) as environment:
        yield environment


@pytest.fixture
async def redis_env() -> AsyncIterator[Env]:
    """Several instances sharing the test Redis."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: presence across instances not tested")
    async with open_env("redis", url) as environment:
        yield environment


@pytest.fixture
async def bare_env() -> AsyncIterator[Env]:
    """Instances built on an explicit Redis URL (a private or an unreachable one)."""
    async with open_env("memory", None) as environment:
        yield environment


async def settle() -> None:
    await asyncio.sleep(0.05)


# ------------------------------------------------------------------ one instance


async def test_first_socket_announces_online_once(env: Env) -> None:
    presence = await env.instance()
    # When Alice opens two sockets (two devices)
    await presence.connect(ALICE)
    await presence.connect(ALICE)
    await env.events.wait_for(1)
    await settle()
    # Then one ONLINE event, with no last seen yet
    assert env.events.items == [{"type": "presence", "user_id": ALICE, "status": "ONLINE", "last_seen_at": None}]
    assert await presence.status_of([ALICE, BOB]) == {ALICE: "ONLINE", BOB: "OFFLINE"}
    assert await presence.online_count() == 1
    # Closing one of two sockets changes nothing
    await presence.disconnect(ALICE)
    await asyncio.sleep(GRACE + 0.1)
    assert env.events.statuses == [(ALICE, "ONLINE")]
    assert await presence.status_of([ALICE]) == {ALICE: "ONLINE"}


async def test_offline_after_the_grace_period_with_last_seen_stored(env: Env) -> None:
    presence = await env.instance()
    await presence.connect(ALICE)
    await env.events.wait_for(1)
    # When her last socket closes
    closed_at = datetime.now(UTC)
    await presence.disconnect(ALICE)
    # Then she stays ONLINE through the grace period
    await asyncio.sleep(GRACE / 2)
    assert await presence.status_of([ALICE]) == {ALICE: "ONLINE"}
    assert env.events.statuses == [(ALICE, "ONLINE")]
    # And goes OFFLINE once it is over, with lastSeenAt stored and announced
    await env.events.wait_for(2)
    assert env.events.statuses == [(ALICE, "ONLINE"), (ALICE, "OFFLINE")]
    assert await presence.status_of([ALICE]) == {ALICE: "OFFLINE"}
    assert await presence.online_count() == 0
    [(user, when)] = env.last_seen
    assert user == ALICE
    assert abs(when - closed_at) < timedelta(seconds=0.1)
    assert env.events.items[1]["last_seen_at"] == when.isoformat()
    # A later return announces ONLINE with the previous last seen
    await presence.connect(ALICE)
    await env.events.wait_for(3)
    assert env.events.items[2] == {
        "type": "presence", "user_id": ALICE, "status": "ONLINE", "last_seen_at": when.isoformat(),
    }


async def test_reconnect_within_grace_does_not_flap(env: Env) -> None:
    presence = await env.instance()
    await presence.connect(ALICE)
    await presence.disconnect(ALICE)
    await asyncio.sleep(GRACE / 2)
    await presence.connect(ALICE)  # a page reload
    await asyncio.sleep(GRACE + 0.1)
    assert env.events.statuses == [(ALICE, "ONLINE")]
    assert env.last_seen == []
    assert await presence.status_of([ALICE]) == {ALICE: "ONLINE"}


async def test_away_choice_is_shown_while_connected(env: Env) -> None:
    presence = await env.instance()
    # Choosing AWAY while offline announces nothing (still OFFLINE to others)
    await presence.set_choice(ALICE, "AWAY")
    await settle()
    assert env.events.items == []
    assert await presence.status_of([ALICE]) == {ALICE: "OFFLINE"}
    # Connecting shows AWAY
    await presence.connect(ALICE)
    await env.events.wait_for(1)
    assert env.events.statuses == [(ALICE, "AWAY")]
    assert await presence.status_of([ALICE]) == {ALICE: "AWAY"}
    # Back to automatic: ONLINE; the same choice again: nothing
    await presence.set_choice(ALICE, "ONLINE")
    await presence.set_choice(ALICE, "ONLINE")
    await env.events.wait_for(2)
    await settle()
    assert env.events.statuses == [(ALICE, "AWAY"), (ALICE, "ONLINE")]
    # AWAY users still go OFFLINE after the grace
    await presence.set_choice(ALICE, "AWAY")
    await presence.disconnect(ALICE)
    await env.events.wait_for(4)
    assert env.events.statuses == [(ALICE, "AWAY"), (ALICE, "ONLINE"), (ALICE, "AWAY"), (ALICE, "OFFLINE")]
    assert [user for user, _ in env.last_seen] == [ALICE]


async def test_offline_choice_appears_offline_and_hides_real_activity(env: Env) -> None:
    presence = await env.instance()
    await presence.connect(ALICE)
    await env.events.wait_for(1)
    # When Alice chooses to appear offline
    await presence.set_choice(ALICE, "OFFLINE")
    await env.events.wait_for(2)
    # Then others see her go OFFLINE now, and her lastSeenAt is stored now
    assert env.events.statuses == [(ALICE, "ONLINE"), (ALICE, "OFFLINE")]
    assert await presence.status_of([ALICE]) == {ALICE: "OFFLINE"}
    assert [user for user, _ in env.last_seen] == [ALICE]
    # Her real comings and goings announce and record nothing
    await presence.connect(ALICE)
    await presence.disconnect(ALICE)
    await presence.disconnect(ALICE)
    await asyncio.sleep(GRACE + 0.1)
    assert len(env.events.items) == 2
    assert len(env.last_seen) == 1
    # Connecting while invisible announces nothing either
    await presence.connect(ALICE)
    await settle()
    assert len(env.events.items) == 2
    # Becoming visible again while connected announces ONLINE
    await presence.set_choice(ALICE, "ONLINE")
    await env.events.wait_for(3)
    assert env.events.statuses[-1] == (ALICE, "ONLINE")


async def test_stored_choice_is_loaded_on_connect(env: Env) -> None:
    # Given Alice chose AWAY earlier (stored in the database, unknown to this process)
    env.choices[ALICE] = "AWAY"
    env.choices[BOB] = "OFFLINE"
    presence = await env.instance()
    # When both connect
    await presence.connect(ALICE)
    await presence.connect(BOB)
    await env.events.wait_for(1)
    await settle()
    # Then Alice shows AWAY and Bob stays invisible
    assert env.events.statuses == [(ALICE, "AWAY")]
    assert await presence.status_of([ALICE, BOB]) == {ALICE: "AWAY", BOB: "OFFLINE"}
    assert await presence.online_count() == 2  # an admin figure: invisible users count


async def test_unknown_choice_is_refused(env: Env) -> None:
    presence = await env.instance()
    with pytest.raises(ValueError):
        await presence.set_choice(ALICE, "BUSY")


# ------------------------------------------------------------ several instances


async def test_two_instances_share_one_presence(redis_env: Env) -> None:
    env = redis_env
    a = await env.instance(instance_id="a")
    b = await env.instance(instance_id="b")
    # Alice connects on both instances: one ONLINE event in all
    await a.connect(ALICE)
    await b.connect(ALICE)
    await env.events.wait_for(1)
    assert await a.status_of([ALICE]) == await b.status_of([ALICE]) == {ALICE: "ONLINE"}
    assert await a.online_count() == await b.online_count() == 1
    # Her socket on A closes: still online, whatever the wait
    await a.disconnect(ALICE)
    await asyncio.sleep(GRACE + 2 * HEARTBEAT)
    assert await b.status_of([ALICE]) == {ALICE: "ONLINE"}
    assert env.events.statuses == [(ALICE, "ONLINE")]
    # A choice made through A is seen through B
    await a.set_choice(ALICE, "AWAY")
    await env.events.wait_for(2)
    assert await b.status_of([ALICE]) == {ALICE: "AWAY"}
    # The last socket closes on B: OFFLINE after the grace, announced exactly once
    await b.disconnect(ALICE)
    await asyncio.sleep(GRACE / 2)
    assert await a.status_of([ALICE]) == {ALICE: "AWAY"}
    await env.events.wait_for(3)
    await asyncio.sleep(2 * HEARTBEAT)  # both instances' sweeps have run meanwhile
    assert env.events.statuses == [(ALICE, "ONLINE"), (ALICE, "AWAY"), (ALICE, "OFFLINE")]
    assert [user for user, _ in env.last_seen] == [ALICE]
    assert await a.status_of([ALICE]) == {ALICE: "OFFLINE"}


async def test_grace_started_on_a_closed_instance_is_finished_by_another(redis_env: Env) -> None:
    env = redis_env
    a = await env.instance(instance_id="a")
    b = await env.instance(instance_id="b")
    await a.connect(ALICE)
    await env.events.wait_for(1)
    # When A shuts down cleanly (a rolling restart), its users enter their grace
    await a.close()
    assert await b.status_of([ALICE]) == {ALICE: "ONLINE"}
    # Then B ends it
    await env.events.wait_for(2, within=GRACE + 3 * HEARTBEAT + 1)
    assert env.events.statuses == [(ALICE, "ONLINE"), (ALICE, "OFFLINE")]
    assert await b.status_of([ALICE]) == {ALICE: "OFFLINE"}


async def test_a_dead_instance_stops_counting_after_expiry(redis_env: Env) -> None:
    env = redis_env
    a = await env.instance(instance_id="a")
    b = await env.instance(instance_id="b")
    await a.connect(ALICE)
    await b.connect(BOB)
    await env.events.wait_for(2)
    # When A dies without cleaning up
    crash(a)
    died = asyncio.get_running_loop().time()
    # Then Alice still counts until A expires
    await asyncio.sleep(EXPIRY / 2)
    assert await b.status_of([ALICE, BOB]) == {ALICE: "ONLINE", BOB: "ONLINE"}
    # And B declares her OFFLINE after A's expiry and her grace, with her last
    # seen at A's last heartbeat; Bob (on B) is unaffected
    await env.events.wait_for(3, within=EXPIRY + GRACE + 1)
    assert asyncio.get_running_loop().time() - died >= EXPIRY - HEARTBEAT
    assert env.events.statuses[2] == (ALICE, "OFFLINE")
    assert await b.status_of([ALICE, BOB]) == {ALICE: "OFFLINE", BOB: "ONLINE"}
    assert await b.online_count() == 1
    [(user, when)] = env.last_seen
    assert user == ALICE
    assert datetime.now(UTC) - when >= timedelta(seconds=EXPIRY)


async def test_unreachable_redis_degrades_to_local_knowledge(bare_env: Env, unused_redis_url: str) -> None:
    env = bare_env
    # Given an instance whose Redis is down
    presence = await env.instance(url=unused_redis_url)
    # Then nothing raises and answers come from its own sockets and grace timers
    await presence.connect(ALICE)
    assert await presence.status_of([ALICE, BOB]) == {ALICE: "ONLINE", BOB: "OFFLINE"}
    assert await presence.online_count() == 1
    await presence.set_choice(ALICE, "AWAY")
    assert await presence.status_of([ALICE]) == {ALICE: "AWAY"}
    await presence.disconnect(ALICE)
    assert await presence.status_of([ALICE]) == {ALICE: "AWAY"}  # within grace
    await asyncio.sleep(GRACE + 0.1)
    assert await presence.status_of([ALICE]) == {ALICE: "OFFLINE"}
    assert await presence.online_count() == 0


async def test_state_is_restored_when_redis_comes_back(bare_env: Env, redis_server: RedisServer) -> None:
    env = bare_env
    presence = await env.instance(url=redis_server.url)
    # Given Redis is down when Alice connects
    redis_server.kill()
    await presence.connect(ALICE)
    assert await presence.status_of([ALICE]) == {ALICE: "ONLINE"}
    # When Redis is back (empty, as after a restart without persistence)
    redis_server.start()
    # Then the next heartbeats re-register her, and she is announced ONLINE
    await env.events.wait_for(1, within=2)
    assert env.events.statuses == [(ALICE, "ONLINE")]
    probe = await env.instance(url=redis_server.url, instance_id="probe")
    assert await probe.status_of([ALICE]) == {ALICE: "ONLINE"}


# ------------------------------------------------------------ the database side


@pytest.fixture
def settings(prefixed_settings: Settings) -> Settings:
    return prefixed_settings




@pytest.fixture
def db_callables(app: Any) -> tuple[Callable[..., Any], Callable[..., Any], Any]:
    db = app.state.parley.services.db
    return last_seen_writer(db), choice_loader(db), db


async def test_last_seen_writer_only_moves_forward(app: Any, db_callables: Any) -> None:
    store_last_seen, _, db = db_callables
    alice = await create_user(app, "alice")
    later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store_last_seen(alice.id, later)
    await store_last_seen(alice.id, later - timedelta(minutes=1))  # a late report from another instance
    async with db.session() as s:
        stored = (await s.execute(select(models.User.last_seen_at).where(models.User.id == alice.id))).scalar_one()
    assert stored == later


async def test_choice_loader_reads_stored_choices(app: Any, db_callables: Any) -> None:
    _, load_choices, db = db_callables
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    async with db.writer() as s, s.begin():
        await s.execute(update(models.User).where(models.User.id == bob.id).values(presence_choice="AWAY"))
    assert await load_choices([alice.id, bob.id, 999_999]) == {alice.id: "ONLINE", bob.id: "AWAY"}
    assert await load_choices([]) == {}


async def test_app_wires_presence_typing_and_stats(app: Any) -> None:
    from realtime.stats import Stats
    from realtime.typing import Typing

    services = app.state.parley.services
    assert isinstance(services.presence, Presence)
    assert isinstance(services.typing, Typing)
    assert isinstance(services.extras["stats"], Stats)
    assert services.extras["stats"].instance_id == services.presence.instance_id
    # Going offline stores lastSeenAt in the app's database
    alice = await create_user(app, "alice")
    presence = services.presence
    await presence.connect(alice.id)
    assert (await presence.status_of([alice.id]))[alice.id] == "ONLINE"
    await presence.set_choice(alice.id, "OFFLINE")
    async with services.db.session() as s:
        stored = (await s.execute(select(models.User.last_seen_at).where(models.User.id == alice.id))).scalar_one()
    assert stored is not None and datetime.now(UTC) - stored < timedelta(seconds=5)
    await presence.disconnect(alice.id)
