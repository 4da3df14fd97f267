"""Garbage-collector policy for a server holding thousands of long-lived sockets.

CPython's full (generation 2) collection walks every tracked object. With 5000 open
sockets that is ~500k objects and 300-400 ms with the event loop stopped, and while
the sockets connect it runs every couple of seconds (each time the live heap grew by a
quarter): measured 24 full collections, 5.7 s in all, and a 400 ms stall in the middle
of a fan-out that showed up as the sendMessage p99 (bench/run.py --n 5000 --rate 8:
mutation p99 450-530 ms with Python's default policy, ~120 ms with this one).

Policy (`install()`), process-wide:
- after every full collection, `gc.freeze()` what survived: it moves to the permanent
  generation, so the next full collections only walk what was allocated since (in the
  measurement above: 24 full collections, 1.0 s in all, the longest 63 ms);
- objects frozen that later become unreachable *only through reference cycles* are not
  reclaimed while frozen (plain reference counting still frees everything else), so
  every `full_every` seconds the permanent generation is thawed and one real full
  collection runs (one long pause, rarely), then it is frozen again.

Only `server.py serve` installs it (setting GC_FREEZE, which `serve` turns on): a
test process keeps Python's default behaviour.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

log = logging.getLogger("parley.gc")

_installed = False


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()  # survivors of a full collection: long-lived, not walked again


def full_collection() -> int:
    """Thaw, collect everything once (cycles among frozen objects included), freeze."""
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    started = time.perf_counter()
    collected = gc.collect()  # a manual full collection also ends in _after_collection's freeze
    gc.freeze()
    log.info(
        "periodic full collection: %d frozen objects re-checked, %d collected in %.0f ms",
        frozen, collected, (time.perf_counter() - started) * 1000,
    )
    return collected


def install(full_every: float = 600.0) -> bool:
    """Install the policy once per process (call it from the running event loop, where
    the periodic full collection is scheduled); True if this call installed it."""
    global _installed
    if _installed:
        return False
    _installed = True
    loop = asyncio.get_running_loop()
    gc.collect()
    gc.freeze()  # what startup built (imports, schema, services) is never garbage
    gc.callbacks.append(_after_collection)

    def periodic() -> None:
        try:
            full_collection()
        finally:
            loop.call_later(full_every, periodic)

    loop.call_later(full_every, periodic)
    return True
