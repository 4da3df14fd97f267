"""HTTP read floor (benchmark 2): the same pages as two GraphQL queries, answered with
hand-written SQL and orjson on the same server, database and authentication.

Mounted by server.py ONLY when BENCH_FLOOR_ENABLED is on (never by default):

- `POST /bench/floor/conversations` answers `bench/reads.py`'s CONVERSATIONS query
  (`conversations(first: 20)` with title, unreadCount, updatedAt, lastMessage and
  its sender, `members(first: 10)`) with the same JSON (`{"data": ...}`);
- `POST /bench/floor/messages` `{"conversationId": ...}` answers its MESSAGES query
  (`messages(conversationId, last: 50)` with senders);
- `GET /bench/stats`: SQL statements run by this process so far (bench/reads.py turns
  it into statements per request, for GraphQL and floor alike).

Both floors authenticate like GraphQL over HTTP (`auth.authenticate`: the bearer token
and its session row), then run a few plain statements (text SQL, no ORM objects):
what is left is the cost of the database and of producing the JSON.
"""
from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import BigInteger, String, Text, bindparam, event, text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth import authenticate as auth_authenticate
from db.models import UTCDateTime
from errors import AppError, NotFound
from schema import ids
from schema.pagination import encode_cursor

PAGE = 20
MEMBERS = 10
MESSAGES = 50

_LIST = text(
    "SELECT c.id, c.kind, c.group_id, c.updated_at, c.last_message_id "
    "FROM conversations c JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = :v "
    "WHERE cm.hidden = :hidden AND c.deleted_at IS NULL "
    "ORDER BY c.updated_at DESC, c.id DESC LIMIT :n"
).columns(id=BigInteger(), kind=String(), group_id=BigInteger(), updated_at=UTCDateTime(), last_message_id=BigInteger())
_GROUP_NAMES = text("SELECT id, name FROM groups WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
_PEERS = text(
    "SELECT cm.conversation_id, u.display_name FROM conversation_members cm JOIN users u ON u.id = cm.user_id "
    "WHERE cm.conversation_id IN :ids AND cm.user_id != :v"
).bindparams(bindparam("ids", expanding=True))
_LAST = text(
    "SELECT m.id, m.body, m.created_at, m.deleted_at, u.id AS uid, u.username, u.display_name "
    "FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.id IN :ids"
).bindparams(bindparam("ids", expanding=True)).columns(
    id=BigInteger(), body=Text(), created_at=UTCDateTime(), deleted_at=UTCDateTime(), uid=BigInteger(),
    username=String(), display_name=String(),
)
_UNREAD = text(
    "SELECT m.conversation_id, count(*) FROM messages m JOIN conversation_members cm "
    "ON cm.conversation_id = m.conversation_id AND cm.user_id = :v "
    "WHERE m.conversation_id IN :ids AND m.seq > cm.last_read_seq AND m.sender_id != :v AND m.deleted_at IS NULL "
    "GROUP BY m.conversation_id"
).bindparams(bindparam("ids", expanding=True))
_MEMBERS = text(
    "SELECT conversation_id, user_id, username, display_name FROM ("
    " SELECT cm.conversation_id, u.id AS user_id, u.username, u.display_name,"
    " row_number() OVER (PARTITION BY cm.conversation_id ORDER BY cm.user_id) AS rn"
    " FROM conversation_members cm JOIN users u ON u.id = cm.user_id WHERE cm.conversation_id IN :ids"
    ") t WHERE rn <= :n ORDER BY conversation_id, user_id"
).bindparams(bindparam("ids", expanding=True))
_ACCESS = text(
    "SELECT 1 FROM conversations c JOIN conversation_members cm ON cm.conversation_id = c.id AND cm.user_id = :v "
    "WHERE c.id = :c AND c.deleted_at IS NULL"
)
_PAGE = text(
    "SELECT m.id, m.seq, m.body, m.created_at, m.edited_at, m.deleted_at, u.id AS uid, u.username, u.display_name "
    "FROM messages m JOIN users u ON u.id = m.sender_id WHERE m.conversation_id = :c ORDER BY m.seq DESC LIMIT :n"
).columns(
    id=BigInteger(), seq=BigInteger(), body=Text(), created_at=UTCDateTime(), edited_at=UTCDateTime(),
    deleted_at=UTCDateTime(), uid=BigInteger(), username=String(), display_name=String(),
)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _user(uid: int, username: str, display_name: str) -> dict[str, Any]:
    return {"id": ids.encode("User", uid), "username": username, "displayName": display_name}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def floor_routes(state: Any) -> list[Route]:
    """The floor routes and the statement counter for server.py (BENCH_FLOOR_ENABLED)."""
    counter = {"statements": 0}
    installed: list[Any] = []

    def count(*_: Any) -> None:
        counter["statements"] += 1

    def services() -> Any:
        svc = state.services
        if not installed:  # the engine exists once the lifespan ran
            event.listen(svc.db.engine.sync_engine, "before_cursor_execute", count)
            installed.append(svc.db.engine)
        return svc

    async def viewer(request: Request) -> Any:
        token = auth_authenticate.bearer_token(request.headers.get("authorization"))
        if token is None:
            raise NotFound("no token")
        return await auth_authenticate.authenticate(services(), token)

    async def conversations(request: Request) -> Response:
        try:
            v = await viewer(request)
        except AppError as exc:
            return _json({"errors": [{"message": exc.message}]}, 401)
        db = services().db
        async with db.session() as s:
            conn = await s.connection()
            rows = (await conn.execute(_LIST, {"v": v.user_id, "hidden": False, "n": PAGE + 1})).all()
            has_next = len(rows) > PAGE
            rows = rows[:PAGE]
            cids = [r.id for r in rows]
            titles: dict[int, str] = {}
            last: dict[int, Any] = {}
            unread: dict[int, int] = {}
            members: dict[int, list[Any]] = {cid: [] for cid in cids}
            if cids:
                group_ids = [r.group_id for r in rows if r.group_id is not None]
                names = {}
                if group_ids:
                    names = dict((await conn.execute(_GROUP_NAMES, {"ids": group_ids})).all())
                direct = [r.id for r in rows if r.group_id is None]
                peers = dict((await conn.execute(_PEERS, {"ids": direct, "v": v.user_id})).all()) if direct else {}
                for r in rows:
                    titles[r.id] = names.get(r.group_id, "") if r.group_id is not None else peers.get(r.id, "")
                message_ids = [r.last_message_id for r in rows if r.last_message_id is not None]
                if message_ids:
                    last = {m.id: m for m in (await conn.execute(_LAST, {"ids": message_ids})).all()}
                unread = {
                    cid: int(n) for cid, n in (await conn.execute(_UNREAD, {"ids": cids, "v": v.user_id})).all()
                }
                for m in (await conn.execute(_MEMBERS, {"ids": cids, "n": MEMBERS + 1})).all():
                    members[m.conversation_id].append(m)
        edges = []
        for r in rows:
            lm = last.get(r.last_message_id) if r.last_message_id is not None else None
            page = members[r.id]
            edges.append({
                "cursor": encode_cursor(r.updated_at.isoformat(), r.id),
                "node": {
                    "id": ids.encode("Conversation", r.id),
                    "kind": r.kind,
                    "title": titles.get(r.id, ""),
                    "unreadCount": unread.get(r.id, 0),
                    "updatedAt": _iso(r.updated_at),
                    "lastMessage": None if lm is None else {
                        "id": ids.encode("Message", lm.id),
                        "body": None if lm.deleted_at is not None else lm.body,
                        "createdAt": _iso(lm.created_at),
                        "sender": _user(lm.uid, lm.username, lm.display_name),
                    },
                    "members": {
                        "edges": [{"node": _user(m.user_id, m.username, m.display_name)} for m in page[:MEMBERS]],
                        "pageInfo": {"hasNextPage": len(page) > MEMBERS},
                    },
                },
            })
        end = edges[-1]["cursor"] if edges else None
        return _json({"data": {"conversations": {
            "edges": edges, "pageInfo": {"hasNextPage": has_next, "endCursor": end},
        }}})

    async def messages(request: Request) -> Response:
        try:
            v = await viewer(request)
            body = orjson.loads(await request.body())
            cid = ids.decode("Conversation", body["conversationId"], field="conversationId")
        except AppError as exc:
            return _json({"errors": [{"message": exc.message}]}, 400)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"errors": [{"message": "bad request"}]}, 400)
        db = services().db
        async with db.session() as s:
            conn = await s.connection()
            if (await conn.execute(_ACCESS, {"v": v.user_id, "c": cid})).first() is None:
                return _json({"data": None, "errors": [{"message": "Conversation not found"}]})
            rows = (await conn.execute(_PAGE, {"c": cid, "n": MESSAGES + 1})).all()
        has_previous = len(rows) > MESSAGES
        rows = list(reversed(rows[:MESSAGES]))
        edges = [{
            "cursor": encode_cursor(m.seq),
            "node": {
                "id": ids.encode("Message", m.id),
                "body": None if m.deleted_at is not None else m.body,
                "createdAt": _iso(m.created_at),
                "editedAt": _iso(m.edited_at),
                "sender": _user(m.uid, m.username, m.display_name),
            },
        } for m in rows]
        start = edges[0]["cursor"] if edges else None
        return _json({"data": {"messages": {
            "edges": edges, "pageInfo": {"hasPreviousPage": has_previous, "startCursor": start},
        }}})

    async def stats(request: Request) -> Response:
        services()
        return _json(dict(counter))

    return [
        Route("/bench/floor/conversations", conversations, methods=["POST"]),
        Route("/bench/floor/messages", messages, methods=["POST"]),
        Route("/bench/stats", stats, methods=["GET"]),
    ]

