#!/usr/bin/env python3
"""Benchmark 4: memory per 1000 idle, authenticated sockets with one subscription each.

For each target and N: start the server, set up users and one group conversation
(as bench/run.py does), open N graphql-transport-ws sockets (connection_init with a
token, then `subscribe` to messageEvents), wait until every one of them has received a
probe event, and read the RSS of the server's process tree before connecting and once
the sockets are quiet. Prints a table and JSON lines with ratios against the Node peer
and the ws floor. Parley runs once per WebSocket implementation (`WS_PROTOCOL`).

  .venv/bin/python bench/idle.py                       # N=1000,5000; parley / direct / websockets-sansio
  .venv/bin/python bench/idle.py --n 1000 --impls parley,websockets-sansio,wsproto --repeat 3

Standard library only (it drives bench/run.py's machinery and bench/loadgen/fanout.mjs).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py

DEFAULT_IMPLS = "parley,direct,websockets-sansio"
OTHERS = ("node-peer", "ws-floor", "py-floor")


def parley_target(impl: str) -> bench.Target:
    base = bench.TARGETS["parley"]

    def env(args: argparse.Namespace, tmp: Path, port: int) -> dict[str, str]:
        out = base.env(args, tmp, port)
        out["WS_PROTOCOL"] = impl
        return out

    return replace(base, name=f"parley[{impl}]", env=env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="1000,5000", help="socket counts")
    p.add_argument("--impls", default=DEFAULT_IMPLS, help="Parley WS_PROTOCOL values to measure")
    p.add_argument("--others", default=",".join(OTHERS), help="reference targets (empty: none)")
    p.add_argument("--repeat", type=int, default=1, help="runs per target and N (median shown)")
    p.add_argument("--jsonl", default=None)
    p.add_argument("--database-url", default=None)
    p.add_argument("--broadcast-url", default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    # bench/run.py's defaults for everything else; one message: the probe phase already
    # proves every socket is subscribed, the RSS sample is taken before it is sent
    args = bench.parse_args(["--targets", "parley", "--messages", "1", "--drain-idle", "5"])
    args.verbose = a.verbose
    args.database_url = a.database_url
    args.broadcast_url = a.broadcast_url
    bench.ensure_node_deps(args)
    targets = [parley_target(i.strip()) for i in a.impls.split(",") if i.strip()]
    targets += [bench.TARGETS[o.strip()] for o in a.others.split(",") if o.strip()]
    rows: list[dict] = []
    for n in [int(x) for x in a.n.split(",") if x.strip()]:
        users = bench.DEFAULT_USERS.get(n) or math.ceil(n / bench.SOCKETS_PER_USER)
        runs: dict[str, list[dict]] = {t.name: [] for t in targets}
        for _ in range(a.repeat):
            for t in targets:
                r = bench.run_one(args, t, n, 1, users)
                runs[t.name].append(r)
        for t in targets:
            ok = [r for r in runs[t.name] if r.get("rss_per_1000_conns_kb") is not None]
            vals = sorted(r["rss_per_1000_conns_kb"] for r in ok)
            row = {
                "type": "idle", "target": t.name, "n": n, "runs": len(runs[t.name]),
                "status": "ok" if len(ok) == len(runs[t.name]) else runs[t.name][0]["status"],
                "reason": next((r.get("reason") for r in runs[t.name] if r.get("reason")), None),
                "rss_per_1000_conns_kb": vals[(len(vals) - 1) // 2] if vals else None,
                "rss_range_kb": [vals[0], vals[-1]] if vals else None,
                "connect_s": ok[0].get("subscribed_s") if ok else None,
            }
            rows.append(row)
    by = {(r["target"], r["n"]): r["rss_per_1000_conns_kb"] for r in rows}
    for r in rows:
        node, floor = by.get(("node-peer", r["n"])), by.get(("ws-floor", r["n"]))
        mine = r["rss_per_1000_conns_kb"]
        r["over_node_peer"] = round(mine / node, 2) if mine and node else None
        r["over_ws_floor"] = round(mine / floor, 2) if mine and floor else None
        r["mb_per_1000"] = round(mine / 1024, 1) if mine else None
    print("\nIdle memory: N authenticated sockets, one messageEvents subscription each")
    headers = ["target", "N", "status", "RSS MB/1k sockets", "range KB", "÷node-peer", "÷ws-floor", "conn+sub s"]
    table = [
        [
            r["target"], bench.fmt(r["n"]), r["status"], bench.fmt(r["mb_per_1000"]),
            "-" if not r["rss_range_kb"] else f"{r['rss_range_kb'][0]:,}-{r['rss_range_kb'][1]:,}",
            bench.fmt(r["over_node_peer"], 2), bench.fmt(r["over_ws_floor"], 2), bench.fmt(r["connect_s"], 2),
        ]
        for r in rows
    ]
    print(bench.table(headers, table))
    print("target: at most 30 MB per 1000 subscribed sockets\n")
    lines = [json.dumps(r) for r in rows]
    for line in lines:
        print(line)
    if a.jsonl:
        Path(a.jsonl).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
