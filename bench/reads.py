#!/usr/bin/env python3
"""Benchmark 2: HTTP list queries, GraphQL vs a hand-written SQL floor on the same server.

A user with 200 conversations (190 groups of 11 members, 10 direct ones, each with a
message from someone else, so lastMessage and unreadCount are real), and one
conversation with 60 messages. Two pages, each asked two ways on the same server,
database and authentication:

* CONVERSATIONS: `conversations(first: 20)` with title, unreadCount, updatedAt,
  lastMessage { sender } and members(first: 10), over POST /graphql, and the same JSON
  from `POST /bench/floor/conversations` (bench/floor_app.py: text SQL + orjson);
* MESSAGES: `messages(conversationId, last: 50)` with senders, and its floor.

The floor routes exist only with BENCH_FLOOR_ENABLED=true (set here for this server).
Before measuring, each floor's answer must equal GraphQL's `data` (else: failed).
Then bench/loadgen/http.mjs runs `--concurrency` keep-alive clients for `--seconds`
per variant. Reported: requests/s, p50/p99, server CPU ms per request, SQL statements
per request (counted in the server), and GraphQL ÷ floor ratios (target: throughput
≥ 0.3 x the floor, a constant number of statements).

  .venv/bin/python bench/reads.py
  .venv/bin/python bench/reads.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/parley_bench
"""
from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py

CONVERSATIONS = (
    "query Page { conversations(first: 20) { edges { cursor node { id kind title unreadCount updatedAt "
    "lastMessage { id body createdAt sender { id username displayName } } "
    "members(first: 10) { edges { node { id username displayName } } pageInfo { hasNextPage } } } } "
    "pageInfo { hasNextPage endCursor } } }"
)
MESSAGES = (
    "query Msgs($c: ID!) { messages(conversationId: $c, last: 50) { edges { cursor node { id body createdAt "
    "editedAt sender { id username displayName } } } pageInfo { hasPreviousPage startCursor } } }"
)
CREATE_GROUP = "mutation($i: CreateGroupInput!) { createGroup(input: $i) { conversation { id } } }"
START_DIRECT = "mutation($u: ID!) { startDirectConversation(userId: $u) { id } }"
SEND = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }"
GROUPS, DIRECTS, OTHERS, HISTORY = 190, 10, 10, 60


def post(url: str, payload: dict, token: str | None) -> Any:
    return bench.http_json(url, payload, token, timeout=60)


def gql(url: str, query: str, variables: dict, token: str) -> dict:
    return bench.gql(url, query, variables, token)


def setup(server: bench.Server, workers: int) -> dict[str, Any]:
    t0 = time.monotonic()
    run = secrets.token_hex(3)
    password = f"Bench-{secrets.token_urlsafe(12)}-9aZ"

    def register(i: int) -> tuple[str, str]:
        d = gql(server.http_url, bench.REGISTER, {"input": {
            "username": f"h{run}_{i:03d}", "password": password, "displayName": f"Reader {i}"}}, None)["register"]
        return d["accessToken"], d["user"]["id"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        users = list(pool.map(register, range(OTHERS + 1)))
    viewer_token, _ = users[0]
    others = users[1:]
    member_ids = [uid for _, uid in others]

    def group(k: int) -> str:
        return gql(server.http_url, CREATE_GROUP, {"i": {"name": f"room {k:03d}", "memberIds": member_ids}},
                   viewer_token)["createGroup"]["conversation"]["id"]

    def direct(k: int) -> str:
        return gql(server.http_url, START_DIRECT, {"u": others[k][1]}, viewer_token)["startDirectConversation"]["id"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        cids = list(pool.map(group, range(GROUPS))) + list(pool.map(direct, range(DIRECTS)))

    def say(k: int) -> None:  # someone else speaks in each: a lastMessage, one unread
        token = others[k % len(others)][0] if k < GROUPS else others[k - GROUPS][0]
        gql(server.http_url, SEND, {"c": cids[k], "b": f"hello from the room {k}"}, token)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(say, range(len(cids))))
    busy = cids[0]
    for k in range(HISTORY):
        gql(server.http_url, SEND, {"c": busy, "b": f"history line {k}"}, others[k % len(others)][0])
    return {"token": viewer_token, "busy": busy, "setup_s": round(time.monotonic() - t0, 1)}


def statements(server: bench.Server) -> int:
    with urllib.request.urlopen(f"http://{bench.HOST}:{server.port}/bench/stats", timeout=10) as r:
        return int(json.loads(r.read())["statements"])


def per_request_statements(server: bench.Server, path: str, body: dict, token: str, n: int = 10) -> float:
    url = f"http://{bench.HOST}:{server.port}{path}"
    before = statements(server)
    for _ in range(n):
        post(url, body, token)
    return round((statements(server) - before) / n, 2)


def loadgen(args: argparse.Namespace, server: bench.Server, path: str, body: dict, token: str) -> dict:
    return run_loadgen(args, {
        "baseUrl": f"http://{bench.HOST}:{server.port}", "concurrency": args.concurrency, "warmupS": args.warmup,
        "durationS": args.seconds, "serverPid": server.proc.pid, "clkTck": bench.os.sysconf("SC_CLK_TCK"),
        "requests": [{"path": path, "token": token, "body": json.dumps(body)}],
    })


def run_loadgen(args: argparse.Namespace, cfg: dict) -> dict:
    """bench/loadgen/http.mjs with `cfg`; its JSON line."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    out = subprocess.run(
        [args.node, str(bench.BENCH / "loadgen" / "http.mjs"), "--config", f.name],
        capture_output=True, text=True, timeout=cfg["durationS"] + cfg["warmupS"] + 120,
    )
    Path(f.name).unlink(missing_ok=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"http loadgen printed nothing: {out.stderr[-500:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=8)
    bench.add_http_bench_options(p)
    a = p.parse_args(argv)
    rows: list[dict] = []
    status, reason = "ok", None
    try:
        with bench.floor_enabled_server(a, "parley-bench-http-") as server:
            data = setup(server, 8)
            token, busy = data["token"], data["busy"]
            variants = [
                ("conversations", "graphql", "/graphql", {"query": CONVERSATIONS}),
                ("conversations", "floor", "/bench/floor/conversations", {}),
                ("messages", "graphql", "/graphql", {"query": MESSAGES, "variables": {"c": busy}}),
                ("messages", "floor", "/bench/floor/messages", {"conversationId": busy}),
            ]
            # the floor must answer exactly what GraphQL answers
            for page in ("conversations", "messages"):
                answers = [post(f"http://{bench.HOST}:{server.port}{path}", body, token)
                           for name, _, path, body in variants if name == page]
                if answers[0] != answers[1] or answers[0].get("errors"):
                    status, reason = "failed", f"{page}: the floor's answer differs from GraphQL's"
                    print(json.dumps(answers[0])[:1500], "\n", json.dumps(answers[1])[:1500], file=sys.stderr)
            edges = answers[0]["data"]["messages"]["edges"] if status == "ok" else []
            # a constant number of statements: a page of 5 costs what a page of 20 does
            first_5 = {"query": CONVERSATIONS.replace("first: 20", "first: 5")}
            small = per_request_statements(server, "/graphql", first_5, token)
            bench.log(f"http: setup {data['setup_s']}s; {len(edges)} messages per page; measuring")
            for page, kind, path, body in variants:
                row = {"type": "http", "page": page, "kind": kind, "concurrency": a.concurrency}
                row["sql_per_request"] = per_request_statements(server, path, body, token)
                if page == "conversations" and kind == "graphql":
                    row["sql_per_request_first_5"] = small
                    row["sql_constant"] = small == row["sql_per_request"]
                row.update(loadgen(a, server, path, body, token))
                rows.append(row)
                if row["errors"]:
                    status, reason = "failed", f"{page}/{kind}: {row['errors']} errors: {row['error_sample']}"
    except (bench.Unavailable, RuntimeError, OSError, ValueError, KeyError) as e:
        status, reason = "failed", f"{type(e).__name__}: {e}"
    ratios = []
    for page in ("conversations", "messages"):
        g = next((r for r in rows if r["page"] == page and r["kind"] == "graphql"), None)
        f = next((r for r in rows if r["page"] == page and r["kind"] == "floor"), None)
        if g and f:
            ratios.append({
                "type": "ratio", "bench": "http", "page": page,
                "graphql_over_floor_rps": round(g["rps"] / f["rps"], 2) if f["rps"] else None,
                "graphql_over_floor_cpu": round(g["server_cpu_ms_per_request"] / f["server_cpu_ms_per_request"], 2)
                if f.get("server_cpu_ms_per_request") else None,
                "graphql_sql_per_request": g["sql_per_request"], "floor_sql_per_request": f["sql_per_request"],
            })
    print(f"\nHTTP reads ({'PostgreSQL' if a.database_url else 'SQLite'}), {a.concurrency} keep-alive clients, "
          f"{a.seconds:g} s each: {status}{': ' + reason if reason else ''}")
    headers = ["page", "via", "req/s", "p50 ms", "p99 ms", "cpu ms/req", "SQL/req", "errors", "loadgen cpu%"]
    table = [[r["page"], r["kind"], bench.fmt(r["rps"]), bench.fmt(r["p50_ms"], 2), bench.fmt(r["p99_ms"], 2),
              bench.fmt(r["server_cpu_ms_per_request"], 2), bench.fmt(r["sql_per_request"], 1), bench.fmt(r["errors"]),
              bench.fmt(r["loadgen_cpu_pct"])] for r in rows]
    print(bench.table(headers, table))
    for r in rows:
        if "sql_constant" in r:
            print(f"  conversations SQL statements: first: 5 -> {r['sql_per_request_first_5']}, first: 20 -> "
                  f"{r['sql_per_request']} ({'constant' if r['sql_constant'] else 'NOT constant'})")
    for x in ratios:
        print(f"  {x['page']}: GraphQL ÷ floor throughput {x['graphql_over_floor_rps']} (target ≥ 0.3), "
              f"CPU per request {x['graphql_over_floor_cpu']}x, SQL statements {x['graphql_sql_per_request']} "
              f"vs {x['floor_sql_per_request']}")
    print()
    bench.emit_json([*rows, *ratios, {"type": "status", "bench": "http", "status": status, "reason": reason}],
                    a.jsonl)
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
