#!/usr/bin/env python3
"""Profile Parley under the fan-out load with py-spy (what PERF notes quote).

Runs `bench/run.py --targets parley -v ...` (extra args are passed through), waits until
the load generator reports every socket subscribed, then samples the Parley server
(and its workers) with py-spy for `--duration` seconds while messages fan out, and
prints the hottest functions (self and inclusive %) from the collapsed stacks.

  .venv/bin/pip install py-spy
  .venv/bin/python bench/profile.py --out /tmp/fanout -- --n 1000 -m 1000
  # -> /tmp/fanout.txt (collapsed stacks, for flamegraph tools / speedscope) + a summary

py-spy needs ptrace rights on the server (same user; kernel.yama.ptrace_scope <= 1
works because the server is our descendant).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        for c in children(p):
            seen.append(c)
            todo.append(c)
    return seen


TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pids: list[int]) -> dict[str, int]:
    """utime+stime ticks per (pid, thread name) of `pids` and their descendants."""
    out: dict[str, int] = {}
    for pid in [*pids, *(d for p in pids for d in descendants(p))]:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                stat = Path(f"/proc/{pid}/task/{t}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            key = f"{pid}/{name}"
            out[key] = out.get(key, 0) + int(fields[11]) + int(fields[12])
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def summarize(path: Path, top: int) -> str:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        self_c[_short(frames[-1])] += count
        for f in {_short(f) for f in frames}:
            incl[f] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * c / total:6.1f}  {f}" for f, c in self_c.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * c / total:6.1f}  {f}" for f, c in incl.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (/path/to/site-packages/pkg/mod.py:123)" -> "func (pkg/mod.py)"
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    name, file = m.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


# perf samples by where the time goes (first matching rule over the whole stack, leaf first)
PERF_BUCKETS = (
    ("kernel: socket write (tcp_sendmsg + loopback receive)", ("tcp_sendmsg", "sock_write_iter", "__GI___libc_write")),
    ("kernel: socket read", ("tcp_recvmsg", "sock_read_iter", "__libc_recv", "__GI___libc_read")),
    ("kernel: GIL / futex (threads handing the GIL over)", ("futex",)),
    ("kernel: epoll", ("epoll",)),
    ("kernel: other", ("[kernel",)),
    ("sqlite3 (C)", ("libsqlite3", "_sqlite3")),
    ("orjson (C)", ("orjson",)),
    ("uvloop (C)", ("uvloop", "loop.cpython")),
    ("httptools (C)", ("httptools", "parser.cpython")),
    ("python interpreter", ("libpython", "python3")),
)


def perf_summary(path: str) -> str:
    if not Path(path).exists():
        return "no perf data"
    script = subprocess.run(["perf", "script", "-i", path], capture_output=True, text=True).stdout
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for block in script.split("\n\n"):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if len(lines) < 2:
            continue
        total += 1
        frames = lines[1:]
        text = " ".join(frames)
        leaf = frames[0].split(None, 1)[-1]
        leaves[leaf.split("+")[0][:100]] += 1
        for name, needles in PERF_BUCKETS:
            if any(n in text for n in needles):
                buckets[name] += 1
                break
        else:
            buckets["other"] += 1
    if not total:
        return "no perf samples"
    out = [f"perf: {total} samples (all threads)", "", "  %    where"]
    out += [f"{100 * c / total:5.1f}  {k}" for k, c in buckets.most_common()]
    out += ["", "  %    leaf symbol"]
    out += [f"{100 * c / total:5.1f}  {k}" for k, c in leaves.most_common(20)]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/parley-profile", help="output prefix (.txt collapsed stacks)")
    p.add_argument("--duration", type=int, default=15, help="seconds to sample once subscribed")
    p.add_argument("--delay", type=float, default=2.0, help="seconds to wait after subscribe (warm-up)")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--phase", choices=("fanout", "connect"), default="fanout",
                   help="sample the fan-out (default) or connecting + subscribing the sockets")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--perf", action="store_true", help="sample with `perf record` (kernel + C frames) instead")
    p.add_argument("--all-threads", action="store_true", help="sample every thread, not only the GIL holder")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then bench/run.py arguments")
    args = p.parse_args()
    rest = [a for a in args.rest if a != "--"]
    spy = shutil.which("py-spy", path=str(REPO / ".venv" / "bin")) or shutil.which("py-spy")
    if not spy:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    cmd = [sys.executable, str(BENCH / "run.py"), "--targets", "parley", "-v", "--json-only", *rest]
    run = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out_txt = Path(args.out + ".txt")
    started = threading.Event()

    def stdout_drain() -> None:
        assert run.stdout is not None
        for _ in run.stdout:
            pass

    threading.Thread(target=stdout_drain, daemon=True).start()
    assert run.stderr is not None
    recorder: subprocess.Popen | None = None
    cpu_report: list[str] = []
    for line in run.stderr:
        sys.stderr.write(line)
        trigger = "subscribed after" if args.phase == "fanout" else ": connecting "
        if trigger in line and not started.is_set():
            started.set()
            servers = [d for d in descendants(run.pid) if "server.py serve" in cmdline(d)]
            if not servers:
                print("server process not found", file=sys.stderr)
                continue
            time.sleep(args.delay if args.phase == "fanout" else 0.2)
            spy_cmd = [
                spy, "record", "--pid", str(servers[0]), "--subprocesses", "--duration", str(args.duration),
                "--rate", str(args.rate), "--format", "raw", "-o", str(out_txt),
                # Without --nonblocking py-spy stops the process per sample (ptrace); the stop
                # lands at the next return to user space, which biases samples towards lines
                # that make syscalls (transport.write showed ~38 % instead of perf's ~21 %).
                "--nonblocking",
            ]
            if args.native:
                spy_cmd.append("--native")
            if not args.all_threads:
                spy_cmd.append("--gil")  # Python CPU: idle pool threads are not "work"
            before = thread_cpu(servers)
            if args.perf:  # not both at once: py-spy's ptrace stops would show up in perf
                spy_cmd = ["sleep", str(args.duration)]
            recorder = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            perf = None
            if args.perf and shutil.which("perf"):
                perf = subprocess.Popen(
                    ["perf", "record", "-F", "499", "-g", "-p", str(servers[0]), "-o", args.out + ".perf", "--",
                     "sleep", str(args.duration)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            recorder.wait()
            if perf is not None:
                perf.wait()
            after = thread_cpu(servers)
            threads = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)
            spent = sum(t for t, _ in threads) or 1
            cpu_report = [f"server CPU by thread over {args.duration}s (s, %):"] + [
                f"  {t / TCK:7.2f}  {100 * t / spent:5.1f}%  {name}" for t, name in threads[:8] if t
            ]
    run.wait()
    if recorder is not None:
        recorder.wait()
        if args.perf:
            print("\n".join(cpu_report))
            print(perf_summary(args.out + ".perf"))
            return 0
        if out_txt.exists():
            print("\n".join(cpu_report))
            print(summarize(out_txt, args.top))
            print(f"\ncollapsed stacks: {out_txt}")
            return 0
    print("no profile recorded", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
