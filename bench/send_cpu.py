#!/usr/bin/env python3
"""sendMessage CPU per call, in process: the whole ASGI app (middleware, auth, Strawberry,
resolver, SQL) driven directly, one request at a time, no sockets and no load generator.

A quick, quiet complement to bench/writes.py (which measures a real server under 20
concurrent senders): process CPU time (`time.process_time`, so aiosqlite's thread and
asyncpg are counted) per mutation, SQL statements per mutation (BEGIN/COMMIT apart),
and optionally a cProfile of the measured calls.

  .venv/bin/python bench/send_cpu.py [--n 500] [--database-url postgresql+asyncpg://...]
      [--broadcast-url redis://...] [--rate-limit] [--profile out.pstats] [--query me]
"""
from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# bench/ holds a profile.py that would shadow the standard library's (cProfile needs it)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import cProfile  # noqa: E402

import orjson  # noqa: E402

SEND = (
    "mutation($i: SendMessageInput!) { sendMessage(input: $i) "
    "{ id body createdAt clientMessageId sender { id username } } }"
)
ME = "query { me { id username } }"
TYPENAME = "query { __typename }"


async def call(app: Any, body: bytes, token: str) -> dict[str, Any]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/graphql", "raw_path": b"/graphql", "query_string": b"", "root_path": "",
        "headers": [
            (b"host", b"bench"), (b"content-type", b"application/json"), (b"accept", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()), (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000), "server": ("bench", 80), "state": {},
    }
    sent = False
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return orjson.loads(b"".join(chunks))


async def main(a: argparse.Namespace) -> None:
    from sqlalchemy import event

    from server import create_app
    from settings import Settings
    from tests.chat.conftest import make_group
    from tests.factories import create_user

    tmp = Path(tempfile.mkdtemp(prefix="parley-send-cpu-"))
    settings = Settings(
        data_dir=tmp, parley_env="test", secret_key="bench-secret-" + "x" * 40,
        channel_prefix=f"parley-send-cpu-{secrets.token_hex(3)}", rate_limit_enabled=a.rate_limit,
    )
    fresh = None
    if a.database_url:
        import asyncpg
        from sqlalchemy.engine import make_url

        base = make_url(a.database_url)
        fresh = f"{base.database}_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(host=base.host, port=base.port or 5432, user=base.username,
                                      password=base.password, database="postgres")
        await admin.execute(f'CREATE DATABASE "{fresh}" TEMPLATE template0')
        settings = replace(settings, database_url=base.set(database=fresh).render_as_string(hide_password=False))
    if a.broadcast_url:
        settings = replace(settings, broadcast_url=a.broadcast_url)
    settings = settings.validated()
    if a.rate_limit:  # budgets large enough never to refuse
        settings = replace(settings, rate_limit_send_message="1000000/minute",
                           rate_limit_http_requests="1000000/minute", rate_limit_default="1000000/minute")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        run = secrets.token_hex(3)
        users = [await create_user(app, f"s{run}{i}") for i in range(3)]
        group = await make_group(app, users[0], {"MEMBER": users[1:]})
        token = users[0].token
        statements = 0

        def before(*_: Any) -> None:
            nonlocal statements
            statements += 1

        engine = app.state.parley.services.db.engine.sync_engine

        def body(i: int) -> bytes:
            if a.query == "me":
                return orjson.dumps({"query": ME})
            if a.query == "typename":
                return orjson.dumps({"query": TYPENAME})
            return orjson.dumps({"query": SEND, "variables": {"i": {
                "conversationId": group.gid, "body": f"message {i}", "clientMessageId": f"c{run}-{i}"}}})

        for i in range(a.warmup):
            out = await call(app, body(-1 - i), token)
            assert "errors" not in out, out
        event.listen(engine, "before_cursor_execute", before)
        profiler = cProfile.Profile() if a.profile else None
        bodies = [body(i) for i in range(a.n)]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for b in bodies:
            out = await call(app, b, token)
            if "errors" in out:
                raise SystemExit(f"error: {out}")
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        event.remove(engine, "before_cursor_execute", before)
        if profiler:
            profiler.dump_stats(a.profile)
    if fresh is not None:
        await admin.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
        await admin.close()
    db = "PostgreSQL" if a.database_url else "SQLite"
    print(f"{a.query} on {db}{' +ratelimit' if a.rate_limit else ''}: n={a.n} cpu ms/call {1000 * cpu / a.n:.2f} "
          f"wall ms/call {1000 * wall / a.n:.2f} SQL/call (incl. BEGIN/COMMIT) {statements / a.n:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--database-url", default=None)
    p.add_argument("--broadcast-url", default=None)
    p.add_argument("--rate-limit", action="store_true")
    p.add_argument("--profile", default=None)
    p.add_argument("--query", choices=["send", "me", "typename"], default="send")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args))
