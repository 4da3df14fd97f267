#!/usr/bin/env python3
"""Benchmark 3: sendMessage throughput and latency with 20 concurrent senders.

Two shapes, each for `--seconds` after a warm-up, with bench/loadgen/http.mjs (20
keep-alive clients, one request in flight each, every request a new clientMessageId):

* shared: the 20 senders post into ONE group conversation (every send advances the
  same conversation's counters: the row lock / SQLite's single writer is the limit);
* spread: each sender posts into its own group conversation (with the same members).

Reported: mutations/s, p50/p95/p99, server CPU ms per mutation (the Parley process;
PostgreSQL's and Redis's own CPU are not counted), SQL statements per mutation
(counted in the server via BENCH_FLOOR_ENABLED's /bench/stats), and spread ÷ shared.
The issue asks for PostgreSQL: pass --database-url (a fresh database is created and
dropped, like bench/run.py) and --broadcast-url; without them it runs on SQLite.

  .venv/bin/python bench/writes.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/parley_bench \\
      --broadcast-url redis://127.0.0.1:6379/0
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reads  # bench/reads.py (loadgen and statement helpers)
import run as bench  # bench/run.py

SENDERS = 20
CREATE_GROUP = "mutation($i: CreateGroupInput!) { createGroup(input: $i) { conversation { id } } }"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_http_bench_options(p)
    a = p.parse_args(argv)
    a.concurrency = SENDERS
    rows: list[dict] = []
    status, reason = "ok", None
    try:
        with bench.floor_enabled_server(a, "parley-bench-writes-") as server:
            run = secrets.token_hex(3)
            password = f"Bench-{secrets.token_urlsafe(12)}-9aZ"

            def register(i: int) -> tuple[str, str]:
                d = bench.gql(server.http_url, bench.REGISTER, {"input": {
                    "username": f"w{run}_{i:03d}", "password": password, "displayName": f"Writer {i}"}})["register"]
                return d["accessToken"], d["user"]["id"]

            with ThreadPoolExecutor(max_workers=8) as pool:
                users = list(pool.map(register, range(SENDERS)))
            ids = [u for _, u in users]

            def group(owner: int) -> str:
                members = [u for u in ids if u != ids[owner]]
                group_input = {"i": {"name": f"writers {owner}", "memberIds": members}}
                return bench.gql(server.http_url, CREATE_GROUP, group_input,
                                 users[owner][0])["createGroup"]["conversation"]["id"]

            shared = group(0)
            with ThreadPoolExecutor(max_workers=8) as pool:
                own = list(pool.map(group, range(SENDERS)))
            for shape, targets in (("shared", [shared] * SENDERS), ("spread", own)):
                requests = []
                for k, (token, _) in enumerate(users):
                    body = json.dumps({"query": bench.SEND_MESSAGE, "variables": {"input": {
                        "conversationId": targets[k], "body": f"write benchmark {shape} from {k}",
                        "clientMessageId": f"{shape}-{k}-{{seq}}"}}})
                    requests.append({"path": "/graphql", "token": token, "body": body})
                before = reads.statements(server)
                t0 = time.monotonic()
                cfg = {"requests": requests}
                result = loadgen(a, server, cfg)
                row = {"type": "writes", "shape": shape, "senders": SENDERS, **result}
                row["sql_per_mutation"] = round((reads.statements(server) - before) / max(1, result["requests"]), 1)
                row["note"] = "sql_per_mutation counts warm-up sends too; approximate"
                row["wall_s"] = round(time.monotonic() - t0, 1)
                rows.append(row)
                if row["errors"]:
                    status, reason = "failed", f"{shape}: {row['errors']} errors: {row['error_sample']}"
    except (bench.Unavailable, RuntimeError, OSError, ValueError, KeyError) as e:
        status, reason = "failed", f"{type(e).__name__}: {e}"
    by = {r["shape"]: r for r in rows}
    ratio = None
    if "shared" in by and "spread" in by and by["shared"]["rps"]:
        ratio = {"type": "ratio", "bench": "writes", "spread_over_shared_rps": round(by["spread"]["rps"] /
                                                                                   by["shared"]["rps"], 2)}
    db = "PostgreSQL" if a.database_url else "SQLite"
    print(f"\nWrites: sendMessage, {SENDERS} concurrent senders ({db}), {a.seconds:g} s each: {status}"
          f"{': ' + reason if reason else ''}")
    headers = ["shape", "mut/s", "p50 ms", "p95 ms", "p99 ms", "cpu ms/mut", "SQL/mut", "errors"]
    print(bench.table(headers, [[r["shape"], bench.fmt(r["rps"]), bench.fmt(r["p50_ms"], 2), bench.fmt(r["p95_ms"], 2),
                                 bench.fmt(r["p99_ms"], 2), bench.fmt(r["server_cpu_ms_per_request"], 2),
                                 bench.fmt(r["sql_per_mutation"]), bench.fmt(r["errors"])] for r in rows]))
    if ratio:
        print(f"  spread ÷ shared throughput: {ratio['spread_over_shared_rps']}")
    print()
    bench.emit_json([*rows, *([ratio] if ratio else []),
                     {"type": "status", "bench": "writes", "status": status, "reason": reason}], a.jsonl)
    return 0 if status == "ok" else 1


def loadgen(a: argparse.Namespace, server: bench.Server, cfg: dict) -> dict:
    full = {
        "baseUrl": f"http://{bench.HOST}:{server.port}", "concurrency": a.concurrency, "warmupS": a.warmup,
        "durationS": a.seconds, "serverPid": server.proc.pid, "clkTck": bench.os.sysconf("SC_CLK_TCK"), **cfg,
    }
    return reads.run_loadgen(a, full)


if __name__ == "__main__":
    sys.exit(main())
