#!/usr/bin/env python3
"""Parley fan-out benchmark driver (`make bench` runs this).

For each N (sockets) and each target, in the same run:
  1. start the target server as a subprocess on a free 127.0.0.1 port (fresh state),
  2. set up users + one group conversation through its API,
  3. run the Node load generator (bench/loadgen/fanout.mjs): N graphql-transport-ws
     sockets subscribe to messageEvents(conversationId), M sendMessage mutations go
     over HTTP, every delivery is counted and timed,
  4. stop the server,
then print a table, the ratios (Parley ÷ Node peer, Parley ÷ floor) and one JSON
line per result.

Targets:
  parley     `python server.py serve` in the repo root (env HOST, PORT, DATA_DIR,
             RATE_LIMIT_ENABLED=false[, DATABASE_URL, BROADCAST_URL]); setup via
             register / createGroup / addGroupMembers. "unavailable" if it does not
             start or its API fails, the other targets still run.
  node-peer  bench/peers/graphql-ws/server.mjs (graphql-js + graphql-ws + PubSub),
             same setup mutations, trivial tokens.
  ws-floor   bench/peers/ws-floor/server.mjs (one pre-serialised frame per event),
             no setup: any bearer token is accepted.

Python 3.11 standard library only. Examples:
  python bench/run.py --quick
  python bench/run.py --targets node-peer,ws-floor --n 1000
  python bench/run.py --n 100,1000,5000 --messages 100 --rate 50 --jsonl out.jsonl
See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen" / "fanout.mjs"
HOST = "127.0.0.1"  # never anything else
ALL_TARGETS = ("parley", "node-peer", "ws-floor", "py-floor")

# Default users (so sockets per user) and messages for each N: at most 20 sockets per user
# (Parley's default MAX_SOCKETS_PER_USER), and enough messages for ~50k-300k deliveries.
DEFAULT_USERS = {100: 10, 1000: 50, 5000: 250}
SOCKETS_PER_USER = 20
DEFAULT_MESSAGES = {100: 500, 1000: 200, 5000: 60}
QUICK_MESSAGES = 100

SUBSCRIPTION = (
    "subscription($c: ID!) { messageEvents(conversationId: $c) { kind cursor message { "
    "id body clientMessageId createdAt editedAt deletedAt isDeleted "
    "sender { id username displayName } conversation { id } "
    "editHistory { body editedAt } attachments { id } mentions { id } } } }"
)
SEND_MESSAGE = "mutation Send($input: SendMessageInput!) { sendMessage(input: $input) { id clientMessageId } }"
REGISTER = "mutation Register($input: RegisterInput!) { register(input: $input) { accessToken user { id } } }"
CREATE_GROUP = (
    "mutation CreateGroup($input: CreateGroupInput!) { createGroup(input: $input) { id conversation { id } } }"
)
ADD_MEMBERS = "mutation Add($g: ID!, $u: [ID!]!) { addGroupMembers(groupId: $g, userIds: $u) { id } }"
MAX_IDS_PER_CALL = 1000  # the contract's limit per createGroup / addGroupMembers


class Unavailable(Exception):
    """The target could not be started or set up: reported, not fatal."""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    tmp: Path
    log_path: Path
    log_file: Any

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/graphql"

    def log_tail(self, lines: int = 15) -> str:
        try:
            if not self.log_file.closed:
                self.log_file.flush()
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.log_file.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], env: dict[str, str], cwd: Path, tmp: Path, port: int) -> Server:
    log_path = tmp / "server.log"
    log_file = open(log_path, "w")
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() kills workers too
        )
    except OSError as e:
        log_file.close()
        raise Unavailable(f"cannot start {cmd[0]}: {e}") from e
    return Server(proc, port, tmp, log_path, log_file)


def wait_ready(server: Server, timeout: float, graphql_probe: bool) -> float:
    """Wait until the port accepts connections and (optionally) `{ __typename }` answers."""
    t0 = time.monotonic()
    last_err = "no answer"
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            raise Unavailable(
                f"server exited with code {server.proc.returncode} before it was ready\n{server.log_tail()}"
            )
        try:
            if graphql_probe:
                data = http_json(server.http_url, {"query": "{ __typename }"}, timeout=5)
                if isinstance(data, dict) and data.get("data"):
                    return time.monotonic() - t0
                last_err = f"unexpected answer to {{ __typename }}: {str(data)[:200]}"
            else:
                with urllib.request.urlopen(f"http://{HOST}:{server.port}/health", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
        except (OSError, ValueError) as e:
            last_err = str(e)
        time.sleep(0.2)
    raise Unavailable(f"not ready after {timeout:.0f}s ({last_err})\n{server.log_tail()}")


# ---------------------------------------------------------------- GraphQL over HTTP (stdlib)


def http_json(url: str, payload: dict, token: str | None = None, timeout: float = 30) -> Any:
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"HTTP {e.code}: {text[:300]}") from e


def gql(url: str, query: str, variables: dict, token: str | None = None, timeout: float = 60) -> dict:
    try:
        data = http_json(url, {"query": query, "variables": variables}, token, timeout)
    except (OSError, ValueError) as e:
        raise Unavailable(f"API request failed: {e}") from e
    if not isinstance(data, dict) or data.get("errors") or not data.get("data"):
        raise Unavailable(f"API error: {json.dumps(data)[:400]}")
    return data["data"]


@dataclass
class Setup:
    tokens: list[str]
    conversation_id: str
    users: int
    setup_s: float
    detail: dict = field(default_factory=dict)


def setup_graphql(server: Server, users: int, workers: int) -> Setup:
    """register `users` users concurrently, user 0 creates a PUBLIC group with all of them."""
    t0 = time.monotonic()
    run = secrets.token_hex(3)
    password = f"Bench-{secrets.token_urlsafe(12)}-9aZ"

    def register(i: int) -> tuple[str, str]:
        d = gql(
            server.http_url,
            REGISTER,
            {"input": {"username": f"b{run}_{i:05d}", "password": password, "displayName": f"Bench User {i}"}},
        )["register"]
        return d["accessToken"], d["user"]["id"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        registered = list(pool.map(register, range(users)))
    t_reg = time.monotonic() - t0
    tokens = [t for t, _ in registered]
    ids = [u for _, u in registered]
    others = ids[1:]
    g = gql(
        server.http_url,
        CREATE_GROUP,
        {"input": {"name": f"bench {run}", "visibility": "PUBLIC", "memberIds": others[:MAX_IDS_PER_CALL]}},
        token=tokens[0],
    )["createGroup"]
    for k in range(MAX_IDS_PER_CALL, len(others), MAX_IDS_PER_CALL):
        gql(server.http_url, ADD_MEMBERS, {"g": g["id"], "u": others[k : k + MAX_IDS_PER_CALL]}, token=tokens[0])
    conv = (g.get("conversation") or {}).get("id")
    if not conv:
        raise Unavailable(f"createGroup returned no conversation: {g}")
    return Setup(tokens, conv, users, time.monotonic() - t0, {"register_s": round(t_reg, 2)})


def setup_floor(server: Server, users: int, workers: int) -> Setup:
    return Setup([f"floor-user-{i}" for i in range(users)], "floor-conversation", users, 0.0)


@dataclass
class Target:
    name: str
    command: Callable[[argparse.Namespace], tuple[list[str], Path]]
    env: Callable[[argparse.Namespace, Path, int], dict[str, str]]
    setup: Callable[[Server, int, int], Setup]
    graphql_probe: bool
    start_timeout: Callable[[argparse.Namespace], float]


def parley_command(args: argparse.Namespace) -> tuple[list[str], Path]:
    if args.parley_cmd:
        return args.parley_cmd.split(), REPO
    if not (REPO / "server.py").exists():
        raise Unavailable(f"{REPO / 'server.py'} not found (Parley not built yet?)")
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    return [python, "server.py", "serve"], REPO


def add_http_bench_options(p: argparse.ArgumentParser) -> None:
    """The options bench/reads.py and bench/writes.py share."""
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--database-url", default=os.environ.get("PARLEY_BENCH_DATABASE_URL"))
    p.add_argument("--broadcast-url", default=os.environ.get("PARLEY_BENCH_BROADCAST_URL"))
    p.add_argument("--server-env", action="append", default=[])
    p.add_argument("--jsonl", default=None)
    p.add_argument("--node", default=shutil.which("node"))


@contextlib.contextmanager
def floor_enabled_server(a: argparse.Namespace, tmp_prefix: str) -> Iterator[Server]:
    """A ready Parley with the bench floor routes (BENCH_FLOOR_ENABLED) for the HTTP
    benchmarks, on a fresh database; stopped and cleaned up on exit."""
    args = parse_args(["--targets", "parley"])
    args.database_url, args.broadcast_url = a.database_url, a.broadcast_url
    args.server_env = ["BENCH_FLOOR_ENABLED=true", *a.server_env]
    args.current_sockets_per_user = 20
    a.node = a.node or args.node
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
    cmd, cwd = parley_command(args)
    port = free_port()
    server = start_server(cmd, parley_env(args, tmp, port), cwd, tmp, port)
    try:
        wait_ready(server, 60, True)
        yield server
    finally:
        server.stop()
        while args.cleanups:
            args.cleanups.pop()()
        shutil.rmtree(tmp, ignore_errors=True)


def emit_json(items: list[dict], jsonl: str | None) -> None:
    """Print one JSON line per item (and write them to `jsonl` when given)."""
    lines = [json.dumps(x) for x in items]
    for line in lines:
        print(line)
    if jsonl:
        Path(jsonl).write_text("\n".join(lines) + "\n")


def parley_env(args: argparse.Namespace, tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROADCAST_URL")}
    data_dir = tmp / "data"
    data_dir.mkdir(exist_ok=True)
    env.update(HOST=HOST, PORT=str(port), DATA_DIR=str(data_dir), RATE_LIMIT_ENABLED="false")
    # several sockets per user is the point of the benchmark: never let the per-user
    # socket cap (default 20) refuse them with 4429 (--server-env can still override)
    env["MAX_SOCKETS_PER_USER"] = str(max(20, args.current_sockets_per_user))
    if args.database_url:
        env["DATABASE_URL"] = fresh_database(args) if args.fresh_db else args.database_url
    if args.broadcast_url:
        env["BROADCAST_URL"] = args.broadcast_url
        env["CHANNEL_PREFIX"] = f"parley-bench-{secrets.token_hex(4)}"  # no crosstalk between runs
    for kv in args.server_env:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def _pg_admin(url: str, statement: str) -> None:
    """Run one statement on PostgreSQL's maintenance database (asyncpg from the venv:
    this driver stays standard-library only)."""
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    script = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    c = await asyncpg.connect(sys.argv[1])\n"
        "    try:\n        await c.execute(sys.argv[2])\n"
        "    finally:\n        await c.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([python, "-c", script, url, statement], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise Unavailable(f"PostgreSQL: {statement}: {done.stderr.strip().splitlines()[-1:]}")


def fresh_database(args: argparse.Namespace) -> str:
    """`--database-url` names a PostgreSQL server and a base name: each run gets its own
    new database `<base>_<hex>`, dropped after the run (SQLite runs get a fresh DATA_DIR)."""
    url = args.database_url
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        return url
    server_part, _, dbname = rest.partition("/")
    dbname, _, query = dbname.partition("?")
    name = f"{dbname or 'parley_bench'}_{secrets.token_hex(4)}"
    admin = f"postgresql://{server_part}/postgres"
    _pg_admin(admin, f'CREATE DATABASE "{name}"')
    args.cleanups.append(lambda: _pg_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return f"{scheme}://{server_part}/{name}" + (f"?{query}" if query else "")


def node_command(script: str) -> Callable[[argparse.Namespace], tuple[list[str], Path]]:
    def cmd(args: argparse.Namespace) -> tuple[list[str], Path]:
        return [args.node, str(BENCH / script)], BENCH

    return cmd


def py_floor_command(args: argparse.Namespace) -> tuple[list[str], Path]:
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    return [python, str(BENCH / "peers" / "py-floor" / "server.py")], BENCH


def node_env(args: argparse.Namespace, tmp: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOST=HOST, PORT=str(port), NODE_ENV="production")
    return env


TARGETS = {
    "parley": Target("parley", parley_command, parley_env, setup_graphql, True, lambda a: a.start_timeout),
    "node-peer": Target(
        "node-peer", node_command("peers/graphql-ws/server.mjs"), node_env, setup_graphql, True, lambda a: 20
    ),
    "ws-floor": Target(
        "ws-floor", node_command("peers/ws-floor/server.mjs"), node_env, setup_floor, False, lambda a: 20
    ),
    "py-floor": Target("py-floor", py_floor_command, node_env, setup_floor, False, lambda a: 20),
}


# ---------------------------------------------------------------- one target at one N


def run_one(args: argparse.Namespace, target: Target, n: int, m: int, users: int) -> dict:
    res: dict[str, Any] = {
        "type": "result",
        "target": target.name,
        "n": n,
        "m": m,
        "users": users,
        "sockets_per_user": math.ceil(n / users),
        "rate": args.rate,
        "inflight": args.inflight,
        "status": "unavailable",
        "reason": None,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f"parley-bench-{target.name}-{n}-"))
    server: Server | None = None
    t_start = time.monotonic()
    args.current_sockets_per_user = res["sockets_per_user"]
    try:
        cmd, cwd = target.command(args)
        port = free_port()
        log(f"{target.name} N={n}: starting {' '.join(cmd)} on {HOST}:{port}")
        server = start_server(cmd, target.env(args, tmp, port), cwd, tmp, port)
        res["start_s"] = round(wait_ready(server, target.start_timeout(args), target.graphql_probe), 2)
        setup = target.setup(server, users, args.setup_concurrency)
        res["setup_s"] = round(setup.setup_s, 2)
        res.update(setup.detail)
        log(f"{target.name} N={n}: {users} users ready in {setup.setup_s:.1f}s; running load generator")

        remaining = args.timeout - (time.monotonic() - t_start)
        if remaining < 10:
            raise TimeoutError(f"timeout ({args.timeout}s) used up by start + setup")
        cfg = {
            "label": f"{target.name} N={n}",
            "wsUrl": server.ws_url,
            "httpUrl": server.http_url,
            "conversationId": setup.conversation_id,
            "tokens": setup.tokens,
            "senderTokens": setup.tokens,
            "sockets": n,
            "messages": m,
            "rate": args.rate,
            "inflight": args.inflight,
            "procs": args.procs,
            "serverPid": server.proc.pid,
            "clkTck": os.sysconf("SC_CLK_TCK"),
            "deadlineS": max(5, int(remaining - 5)),
            "drainIdleS": args.drain_idle,
            "subscriptionQuery": SUBSCRIPTION,
            "mutationQuery": SEND_MESSAGE,
        }
        cfg_path = tmp / "fanout.json"
        cfg_path.write_text(json.dumps(cfg))
        fan = run_loadgen(args, cfg_path, remaining)
        res["detail"] = fan
        if fan.get("deliveries") is None:
            # nothing measured: no socket acknowledged, or sendMessage refused every probe
            # -> the API is not usable (yet), like a server that does not start
            early = fan.get("phase") in ("start", "connect", "probe")
            res["status"] = "unavailable" if early else "failed"
            res["reason"] = fan.get("error") or "load generator produced no figures"
        else:
            res["status"] = "ok" if fan.get("ok") else "failed"
            res["reason"] = fan.get("error")
            res.update(flatten(fan))
        if server.proc.poll() is not None:
            res["status"] = "failed"
            res["reason"] = f"server died (code {server.proc.returncode}): {server.log_tail(5)}"
    except Unavailable as e:
        res["status"] = "unavailable"
        res["reason"] = str(e)
    except TimeoutError as e:
        res["status"] = "failed"
        res["reason"] = str(e)
    except Exception as e:  # a bench bug must not hide the other targets' figures
        res["status"] = "failed"
        res["reason"] = f"{type(e).__name__}: {e}"
    finally:
        if server is not None:
            if res["status"] != "ok" and args.verbose:
                log(f"{target.name} server log tail:\n{server.log_tail(30)}")
            server.stop()
        while args.cleanups:
            try:
                args.cleanups.pop()()
            except Exception as e:  # a leftover database is worth a line, not a crash
                log(f"cleanup failed: {e}")
        if args.keep_tmp:
            res["tmp"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    if res["status"] != "ok":
        first = str(res["reason"] or "").splitlines()[:1]
        log(f"{target.name} N={n}: {res['status'].upper()}: {first[0] if first else ''}")
    return res


def run_loadgen(args: argparse.Namespace, cfg_path: Path, timeout: float) -> dict:
    cmd = [args.node, str(LOADGEN), "--config", str(cfg_path)]
    proc = subprocess.Popen(
        cmd,
        cwd=BENCH,
        stdout=subprocess.PIPE,
        stderr=None if args.verbose else subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"load generator exceeded the {args.timeout}s timeout") from e
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"load generator printed no JSON (exit {proc.returncode})")


def flatten(f: dict) -> dict:
    """The headline figures of one fanout.mjs result, flat (also what the table shows)."""
    d, lat, srv, mut, con, sk, lg = (
        f["deliveries"],
        f["latency_ms"],
        f["server"],
        f["mutations"],
        f["connect"],
        f["sockets"],
        f["loadgen"],
    )
    return {
        "deliveries": d["unique"],
        "expected": d["expected"],
        "lost": d["lost"],
        "duplicates": d["dup"],
        "order_mismatch_sockets": d["order_mismatch_sockets"],
        "deliveries_per_s": f["deliveries_per_s"],
        "cpu_us_per_delivery": srv.get("cpu_us_per_delivery"),
        "server_cpu_util_pct": srv.get("cpu_util_pct"),
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
        "latency_max_ms": lat["max"],
        "rss_per_1000_conns_kb": srv.get("rss_per_1000_conns_kb"),
        "rss_before_kb": srv.get("rss_before_kb"),
        "rss_after_subscribe_kb": srv.get("rss_after_subscribe_kb"),
        "connect_s": con["connect_s"],
        "subscribed_s": con["subscribed_s"],
        "connect_failures": con["failed"],
        "unexpected_closes": sk["unexpected_closes"],
        "error_frames": sk["error_frames"],
        "mutation_errors": mut["errors"],
        "mutation_p50_ms": mut["p50"],
        "mutation_p99_ms": mut["p99"],
        "frame_bytes": d["frame_bytes_avg"],
        "loadgen_cpu_pct": lg["worker_cpu_pct"],
        "loadgen_saturated": lg["saturated"],
    }


# ---------------------------------------------------------------- report


def fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and digits > 1:
        v = float(v)  # JSON turns 48.0 into 48
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


MEDIAN_FIELDS = (
    "deliveries_per_s", "cpu_us_per_delivery", "server_cpu_util_pct", "latency_p50_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_max_ms", "rss_per_1000_conns_kb", "rss_before_kb", "rss_after_subscribe_kb",
    "connect_s", "subscribed_s", "mutation_p50_ms", "mutation_p99_ms", "frame_bytes", "loadgen_cpu_pct",
    "start_s", "setup_s",
)  # fmt: skip
WORST_FIELDS = (
    "lost", "duplicates", "order_mismatch_sockets", "unexpected_closes", "error_frames", "mutation_errors",
    "connect_failures",
)  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    """Several runs of one target at one N: the median of each figure, the worst of each error count."""
    if len(runs) == 1:
        return runs[0]
    out = {k: v for k, v in runs[0].items() if k not in ("detail", "run", "wall_s")}
    out["type"] = "summary"
    out["runs"] = len(runs)
    statuses = [r["status"] for r in runs]
    out["status"] = (
        "ok"
        if all(s == "ok" for s in statuses)
        else ("unavailable" if all(s == "unavailable" for s in statuses) else "failed")
    )
    out["reason"] = next((r["reason"] for r in runs if r.get("reason")), None)
    measured = [r for r in runs if r.get("deliveries") is not None]
    for k in MEDIAN_FIELDS:
        vals = sorted(r[k] for r in measured if r.get(k) is not None)
        out[k] = vals[(len(vals) - 1) // 2] if vals else None  # lower median: always a measured value
        if vals and len(vals) > 1:
            out[f"{k}_range"] = [vals[0], vals[-1]]
    for k in WORST_FIELDS:
        vals = [r[k] for r in measured if r.get(k) is not None]
        out[k] = max(vals) if vals else None
    saturated = sum(1 for r in measured if r.get("loadgen_saturated"))
    out["loadgen_saturated"] = saturated * 2 > len(measured)  # in most runs
    out["loadgen_saturated_runs"] = saturated
    return out


def ratios(results: list[dict]) -> list[dict]:
    out = []
    by = {(r["target"], r["n"]): r for r in results if r["status"] in ("ok", "failed") and r.get("cpu_us_per_delivery")}
    for n in sorted({r["n"] for r in results}):
        p, node, floor = by.get(("parley", n)), by.get(("node-peer", n)), by.get(("ws-floor", n))
        pyfloor = by.get(("py-floor", n))

        def div(a: dict | None, b: dict | None, k: str) -> float | None:
            return round(a[k] / b[k], 2) if a and b and a.get(k) and b.get(k) else None

        row = {
            "type": "ratio",
            "n": n,
            "parley_over_node_peer_cpu": div(p, node, "cpu_us_per_delivery"),
            "parley_over_floor_cpu": div(p, floor, "cpu_us_per_delivery"),
            "node_peer_over_floor_cpu": div(node, floor, "cpu_us_per_delivery"),
            "parley_over_node_peer_rate": div(p, node, "deliveries_per_s"),
            "parley_over_floor_rate": div(p, floor, "deliveries_per_s"),
            "parley_over_node_peer_rss": div(p, node, "rss_per_1000_conns_kb"),
            "parley_over_py_floor_cpu": div(p, pyfloor, "cpu_us_per_delivery"),
            "py_floor_over_floor_cpu": div(pyfloor, floor, "cpu_us_per_delivery"),
        }
        if any(v is not None for k, v in row.items() if k not in ("type", "n")):
            out.append(row)
    return out


def sat_mark(r: dict) -> str:
    if r.get("loadgen_saturated"):
        return " SAT"
    k = r.get("loadgen_saturated_runs")
    return f" ({k}/{r['runs']} SAT)" if k else ""


def print_report(results: list[dict], ratio_rows: list[dict]) -> None:
    headers = [
        "target", "N", "M", "users", "status", "deliv/s", "cpu µs/deliv", "p50 ms", "p95 ms", "p99 ms",
        "lost", "dup", "closes", "RSS KB/1k conn", "conn+sub s", "mut p99 ms", "loadgen cpu%",
    ]  # fmt: skip
    rows = []
    for r in results:
        rows.append(
            [
                r["target"], fmt(r["n"]), fmt(r["m"]), fmt(r["users"]), r["status"],
                fmt(r.get("deliveries_per_s")), fmt(r.get("cpu_us_per_delivery"), 2),
                fmt(r.get("latency_p50_ms")), fmt(r.get("latency_p95_ms")), fmt(r.get("latency_p99_ms")),
                fmt(r.get("lost")), fmt(r.get("duplicates")), fmt(r.get("unexpected_closes")),
                fmt(r.get("rss_per_1000_conns_kb")), fmt(r.get("subscribed_s"), 2),
                fmt(r.get("mutation_p99_ms")),
                fmt(r.get("loadgen_cpu_pct")) + sat_mark(r),
            ]
        )  # fmt: skip
    print()
    runs = max((r.get("runs", 1) for r in results), default=1)
    print(
        "Fan-out: N sockets subscribed to one conversation, M messages via sendMessage"
        + (f" (median of {runs} runs)" if runs > 1 else "")
    )
    print(table(headers, rows))
    notes = [r for r in results if r["status"] != "ok"]
    for r in notes:
        reason = (r.get("reason") or "").strip().splitlines()
        print(f"  * {r['target']} N={r['n']}: {r['status']}: {reason[0] if reason else ''}")
        for extra in reason[1:6]:
            print(f"      {extra}")
    if ratio_rows:
        print()
        print("Ratios (CPU µs per delivery: lower is better for Parley; rate: higher is better)")
        rh = [
            "N", "Parley÷Node cpu", "Parley÷floor cpu", "Node÷floor cpu", "Parley÷Node rate", "Parley÷floor rate",
            "Parley÷py-floor cpu", "py-floor÷floor cpu",
        ]  # fmt: skip
        rr = [
            [
                fmt(x["n"]), fmt(x["parley_over_node_peer_cpu"], 2), fmt(x["parley_over_floor_cpu"], 2),
                fmt(x["node_peer_over_floor_cpu"], 2), fmt(x["parley_over_node_peer_rate"], 2),
                fmt(x["parley_over_floor_rate"], 2), fmt(x["parley_over_py_floor_cpu"], 2),
                fmt(x["py_floor_over_floor_cpu"], 2),
            ]
            for x in ratio_rows
        ]  # fmt: skip
        print(table(rh, rr))
    print()


# ---------------------------------------------------------------- main


def ensure_node_deps(args: argparse.Namespace) -> None:
    if not args.node:
        raise SystemExit("bench: `node` (>= 20) not found on PATH")
    if (BENCH / "node_modules" / "ws").exists() and (BENCH / "node_modules" / "graphql-ws").exists():
        return
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("bench: node_modules missing and npm not found; run `npm ci --prefix bench`")
    log("installing bench Node dependencies (npm ci --prefix bench)")
    subprocess.run([npm, "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund"], check=True, timeout=600)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Parley fan-out benchmark: Parley vs a graphql-ws Node peer vs a ws floor.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help=f"small run: N=100, M={QUICK_MESSAGES}, short timeouts")
    p.add_argument(
        "--suite", default=None,
        help="comma list of fanout, idle, reads, writes, or all (default: all when run with no arguments, "
        "as `make bench` does; fanout otherwise)",
    )
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma list of " + ", ".join(ALL_TARGETS))
    p.add_argument("--n", default=None, help="comma list of socket counts (default 100,1000,5000; --quick: 100)")
    p.add_argument("--messages", "-m", type=int, default=None, help="messages per run (default depends on N)")
    p.add_argument("--users", type=int, default=None, help="users per run (default N/20: 10, 50, 250)")
    p.add_argument("--rate", type=float, default=0, help="messages/s; 0 = as fast as the server answers")
    p.add_argument("--inflight", type=int, default=1, help="max sendMessage requests in flight")
    p.add_argument("--procs", type=int, default=1, help="load generator worker processes holding the sockets")
    p.add_argument("--repeat", type=int, default=1, help="runs per target and N; the table shows medians")
    p.add_argument("--timeout", type=float, default=None, help="seconds per target and N (default 300; quick 90)")
    p.add_argument("--start-timeout", type=float, default=60, help="seconds for Parley to answer { __typename }")
    p.add_argument("--drain-idle", type=float, default=10, help="stop waiting for deliveries after this many idle s")
    p.add_argument("--setup-concurrency", type=int, default=8, help="concurrent register calls")
    p.add_argument("--parley-cmd", default=None, help="override the Parley command (run in the repo root)")
    p.add_argument(
        "--database-url", default=os.environ.get("PARLEY_BENCH_DATABASE_URL"), help="DATABASE_URL for Parley"
    )
    p.add_argument(
        "--broadcast-url", default=os.environ.get("PARLEY_BENCH_BROADCAST_URL"), help="BROADCAST_URL for Parley"
    )
    p.add_argument(
        "--reuse-db", dest="fresh_db", action="store_false",
        help="use --database-url as is (default: a fresh PostgreSQL database per run, dropped afterwards)",
    )
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for Parley")
    p.add_argument("--jsonl", default=None, help="also write the JSON lines to this file")
    p.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dirs (server logs, DATA_DIR)")
    p.add_argument("--verbose", "-v", action="store_true", help="stream load generator progress to stderr")
    p.add_argument("--node", default=shutil.which("node"), help="node binary")
    raw = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    args.cleanups = []
    suite = args.suite or ("all" if not raw else "fanout")
    args.suite = ["fanout", "idle", "reads", "writes"] if suite == "all" else [x.strip() for x in suite.split(",")]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in args.targets:
        if t not in TARGETS:
            p.error(f"unknown target {t!r} (choose from {', '.join(ALL_TARGETS)})")
    ns = args.n or ("100" if args.quick else "100,1000,5000")
    args.ns = [int(x) for x in ns.split(",") if x.strip()]
    if args.timeout is None:
        args.timeout = 90 if args.quick else 300
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_node_deps(args)
    node_version = subprocess.run([args.node, "--version"], capture_output=True, text=True).stdout.strip()
    env_line = {
        "type": "env",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version,
        "targets": args.targets,
        "n": args.ns,
        "rate": args.rate,
        "inflight": args.inflight,
        "procs": args.procs,
    }
    results: list[dict] = []  # every run
    summaries: list[dict] = []  # one per target and N (the run itself when --repeat 1)
    for n in args.ns:
        users = max(1, min(n, args.users or DEFAULT_USERS.get(n) or math.ceil(n / SOCKETS_PER_USER)))
        m = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES.get(n) or max(20, 200_000 // n))
        runs: dict[str, list[dict]] = {name: [] for name in args.targets}
        for i in range(args.repeat):  # interleaved, so drift on the machine hits every target alike
            for name in args.targets:
                if i and runs[name][0]["status"] == "unavailable":
                    continue
                r = run_one(args, TARGETS[name], n, m, users)
                if args.repeat > 1:
                    r["run"] = i + 1
                runs[name].append(r)
                results.append(r)
        summaries.extend(summarize(runs[name]) for name in args.targets)
    ratio_rows = ratios(summaries)
    extra = [s for s in summaries if s.get("type") == "summary"]
    lines = [json.dumps(env_line)] + [json.dumps(r) for r in results + extra + ratio_rows]
    if not args.json_only:
        print_report(summaries, ratio_rows)
    for line in lines:
        print(line)
    if args.jsonl:
        Path(args.jsonl).write_text("\n".join(lines) + "\n")
    # Non-zero only when a target that ran did not deliver everything correctly;
    # an unavailable target (e.g. Parley not built yet) is reported, not fatal.
    failed = any(r["status"] == "failed" for r in results)
    return 1 if failed else 0


def run_suite(argv: list[str] | None = None) -> int:
    """Benchmarks 1-4 (bench/README.md): fan-out here, then idle, reads, writes."""
    args = parse_args(argv)
    code = main(argv) if "fanout" in args.suite else 0
    services = []
    if args.database_url:
        services += ["--database-url", args.database_url]
    extra = {
        "idle": services + (["--broadcast-url", args.broadcast_url] if args.broadcast_url else []),
        "reads": services,
        "writes": services + (["--broadcast-url", args.broadcast_url] if args.broadcast_url else []),
    }
    for name in ("idle", "reads", "writes"):
        if name in args.suite:
            module = __import__(name)  # bench/<name>.py, next to this file
            sys.stdout.flush()
            code = max(code, module.main(extra[name]))
    return code


if __name__ == "__main__":
    sys.exit(run_suite())
