"""Concurrent writers on PostgreSQL: gapless sequences and event positions, one
message per idempotency key, one direct conversation per pair.

On the embedded backend writers are serialised by SQLite itself (BEGIN IMMEDIATE), so
these races cannot happen there and the tests are skipped.
"""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from db import models
from tests.chat.conftest import count_rows, make_group
from tests.chat.helpers import DELETE, EDIT, MESSAGES, START, send, start
from tests.factories import create_user


@pytest.fixture(autouse=True)
def postgres_only(backend):
    if backend != "services":
        pytest.skip("concurrency tests need PostgreSQL (SQLite serialises writers)")


async def sequences(app, conversation_id: int) -> tuple[list[int], list[int], models.Conversation]:
    async with app.state.parley.services.db.session() as s:
        seqs = list((await s.execute(select(models.Message.seq).where(
            models.Message.conversation_id == conversation_id).order_by(models.Message.seq))).scalars())
        pos = list((await s.execute(select(models.MessageEvent.pos).where(
            models.MessageEvent.conversation_id == conversation_id).order_by(models.MessageEvent.pos))).scalars())
        conversation = await s.get(models.Conversation, conversation_id)
    assert conversation is not None
    return seqs, pos, conversation


async def test_twenty_concurrent_senders_get_gapless_sequences(app, gql, published):
    owner = await create_user(app, "owner")
    senders = [await create_user(app, f"s{i}") for i in range(20)]
    group = await make_group(app, owner, {"MEMBER": senders})
    published.clear()

    sent = await asyncio.gather(*(send(gql, u, group.gid, f"from {u.username}") for u in senders))

    seqs, pos, conversation = await sequences(app, group.conversation_id)
    assert seqs == list(range(1, 21))
    assert pos == list(range(1, 21))
    assert (conversation.last_seq, conversation.last_event_pos) == (20, 20)
    announced = sorted(e["pos"] for _, e in published.of_type("message"))
    assert announced == list(range(1, 21))
    # the last message is the one with the highest sequence
    async with app.state.parley.services.db.session() as s:
        last = await s.get(models.Message, conversation.last_message_id)
    assert last is not None and last.seq == 20
    assert len({m["id"] for m in sent}) == 20


async def test_mixed_concurrent_writes_keep_event_positions_gapless(app, gql, published):
    owner = await create_user(app, "owner")
    members = [await create_user(app, f"s{i}") for i in range(6)]
    group = await make_group(app, owner, {"MEMBER": members})
    first = [await send(gql, u, group.gid, "v1") for u in members]

    async def churn(i: int) -> None:
        user, message = members[i], first[i]
        await gql.ok(EDIT, {"id": message["id"], "b": "v2"}, token=user.token)
        await send(gql, user, group.gid, "another")
        await gql.ok(DELETE, {"id": message["id"]}, token=user.token)

    await asyncio.gather(*(churn(i) for i in range(6)))

    seqs, pos, conversation = await sequences(app, group.conversation_id)
    assert seqs == list(range(1, 13))
    assert pos == list(range(1, 25))  # 12 ADDED + 6 EDITED + 6 DELETED
    assert conversation.last_event_pos == 24


async def test_concurrent_retries_with_one_client_message_id_make_one_message(app, gql, published):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")
    cid = await start(gql, alice, bob)
    published.clear()

    results = await asyncio.gather(*(send(gql, alice, cid, "exactly once", clientMessageId="tap-1")
                                     for _ in range(10)))

    assert len({m["id"] for m in results}) == 1
    assert await count_rows(app, models.Message) == 1
    seqs, pos, conversation = await sequences(app, int(cid.split("_")[1]))
    assert (seqs, pos, conversation.last_seq) == ([1], [1], 1)
    assert len(published.of_type("message")) == 1
    assert await count_rows(app, models.Notification) == 1


async def test_concurrent_start_direct_from_both_sides_makes_one_conversation(app, gql):
    alice = await create_user(app, "alice")
    bob = await create_user(app, "bob")

    calls = [gql.ok(START, {"u": bob.gid}, token=alice.token) for _ in range(5)]
    calls += [gql.ok(START, {"u": alice.gid}, token=bob.token) for _ in range(5)]
    results = await asyncio.gather(*calls)

    assert len({r["startDirectConversation"]["id"] for r in results}) == 1
    assert await count_rows(app, models.Conversation) == 1
    assert await count_rows(app, models.ConversationMember) == 2


async def test_a_reader_paging_during_concurrent_sends_misses_nothing(app, gql):
    owner = await create_user(app, "owner")
    senders = [await create_user(app, f"s{i}") for i in range(10)]
    group = await make_group(app, owner, {"MEMBER": senders})
    done = asyncio.Event()

    async def write() -> None:
        for round_ in range(3):
            await asyncio.gather(*(send(gql, u, group.gid, f"{u.username}-{round_}") for u in senders))
        done.set()

    async def read() -> list[int]:
        seen: list[int] = []
        cursor = None
        while True:
            finished = done.is_set()
            args = {"c": group.gid, "first": 4} | ({"after": cursor} if cursor else {})
            data = (await gql.ok(MESSAGES, args, token=owner.token))["messages"]
            seen += [int(e["node"]["id"].split("_")[1]) for e in data["edges"]]
            cursor = data["pageInfo"]["endCursor"] or cursor
            if finished and not data["edges"]:
                return seen
            await asyncio.sleep(0)

    _, seen_ids = await asyncio.gather(write(), read())

    async with app.state.parley.services.db.session() as s:
        by_seq = list((await s.execute(select(models.Message.id).order_by(models.Message.seq))).scalars())
    assert seen_ids == by_seq  # every message once, in sequence order
    assert len(seen_ids) == 30
