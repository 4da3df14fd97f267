"""Subscription fan-out: one hub listener per channel, one execution per event per group.

Why not one `schema.subscribe` stream per subscriber (Strawberry's handlers): that
re-executes the same selection set for every socket (measured ~130-150 µs of CPU per
delivery, 57% of it re-execution) and keeps a task, a queue and an async generator per
subscriber. Here:

- A Subscription field's resolver authorizes and returns a `LiveSource`: the channels
  to listen on, the permission scope, how to turn a hub event into the root value, and
  (for messageEvents) how to replay from the database by position.
- Subscribers that share (query text, operation name, the variables the selection
  uses, permission scope, and the viewer only when the selection touches a
  viewer-dependent field) form a `Group`. Per event the group builds the root value
  once, executes the selection set once with a fresh per-event context (loaders primed
  from the event snapshot) and serialises the payload once; each subscriber's frame is
  `prefix(op id) + payload + b"}"`. Fields that depend on whether the viewer is the
  message's sender (clientMessageId) split a group's payload in two variants, not in
  one per viewer.
- A `Feed` per channel is the hub listener (the hub calls it synchronously); it queues
  events and one task per busy channel dispatches them in order, yielding to the loop
  every `YIELD_EVERY` sends so pings, mutations and other channels keep flowing.
- Positioned streams (messageEvents) track each subscriber's last delivered position:
  a duplicate is dropped, a jump (events from two instances can arrive out of order) or
  a hub gap (Redis was away) switches the subscriber to *filling*, and the group's one
  fill task replays from the database (everything after the position, executed once per
  event for all filling subscribers), then hands over to live with no await between the
  last check and the switch, so nothing is lost or repeated. `after` subscriptions start
  in that same filling state right after the hub subscription is live.
- Bounded: a socket's outbox refuses a frame past its limits, and that subscriber ends
  with RESUME_REQUIRED (it resumes by cursor); a feed whose backlog passes
  `MAX_FEED_BACKLOG` drops it and treats it as a gap.

This module knows no database, schema module or socket: it runs graphql-core's
executor on the schema it is given, calls the `LiveSource` methods the schema layer
implements, and talks to sockets through the small `Sink` protocol.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    Node,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    VariableNode,
    Visitor,
    get_named_type,
    parse,
    specified_rules,
    validate,
    visit,
)
from graphql.execution import ExecutionResult, Executor, create_source_event_stream, execute_subscription_event

from errors import AppError, NotFound, ResumeRequired
from realtime.protocol import result_payload

log = logging.getLogger("parley.realtime")

YIELD_EVERY = 128  # sends between yields to the event loop
MAX_FEED_BACKLOG = 10_000  # queued events per channel before the backlog becomes a gap
REPLAY_BATCH = 500
DOCUMENT_CACHE_SIZE = 512
_MISSING: Any = object()
_GAP: Any = object()

FieldRef = tuple[str, str]  # (GraphQL type name, field name)


# ----------------------------------------------------------------------------- sources


class LiveSource:
    """What a Subscription field's resolver returns: how to feed that subscription.

    One instance per subscriber (it may hold per-subscriber state, e.g. the users a
    presence subscriber may see); the group's first subscriber's instance also serves
    the group-wide calls (`root`, `replay`, `variant`). Methods called on the dispatch
    path (`admit`, `control`, `variant`, `position`, `root`) must be quick and must not
    block; `root` may be a coroutine when it needs the database (once per group and
    event, never per subscriber).
    """

    channels: tuple[str, ...] = ()  # hub channels whose events this subscription follows
    private_channels: tuple[str, ...] = ()  # per-subscriber control channels (see on_private)
    scope: Hashable = None  # permission scope: subscribers of one scope may share payloads
    event_types: frozenset[str] = frozenset()  # event "type"s that produce a delivery
    control_types: frozenset[str] = frozenset()  # event "type"s passed to control()
    filtered = False  # admit() is asked per subscriber
    positioned = False  # events carry a position; replay() fills gaps
    interval: float | None = None  # timer-driven: root(None, ctx) every `interval` seconds
    viewer_fields: frozenset[FieldRef] = frozenset()  # selecting these makes payloads per viewer
    # Selecting `sender_fields` splits payloads by `variant()` (e.g. "is the viewer the
    # sender"), provided every selected field returning one of `sender_types` is in
    # `sender_carriers` (the event's own message); otherwise payloads are per viewer.
    sender_fields: frozenset[FieldRef] = frozenset()
    sender_types: frozenset[str] = frozenset()
    sender_carriers: frozenset[FieldRef] = frozenset()

    def admit(self, event: dict[str, Any], viewer: Any) -> bool:
        return True

    def control(self, event: dict[str, Any], viewer: Any) -> AppError | None:
        """An error ends this subscriber (e.g. NOT_FOUND once removed from the conversation)."""
        return None

    def variant(self, event: dict[str, Any], viewer: Any) -> Hashable:
        return None

    def root(self, event: dict[str, Any] | None, ctx: Any) -> Any:
        """The root value for executing the selection set (None: nothing to deliver)."""
        raise NotImplementedError

    async def start(self, ctx: Any) -> int | None:
        """Runs once the hub subscription is live: re-check access (a change between the
        resolver's check and now was not seen by the feed); positioned sources return the
        position to fill from (the `after` cursor, or the current end)."""
        return None

    def position(self, event: dict[str, Any]) -> int:
        raise NotImplementedError

    async def replay(self, ctx: Any, after: int, limit: int) -> list[dict[str, Any]]:
        """Events after position `after`, oldest first, shaped like the live ones."""
        raise NotImplementedError

    async def still_allowed(self, ctx: Any, user_ids: set[int]) -> set[int]:
        """Which of `user_ids` may still receive this stream (checked after a replay read)."""
        return user_ids

    def denied(self) -> AppError:
        """What ends a subscriber that lost access (NOT_FOUND, as if it never existed)."""
        return NotFound()

    def on_private(self, channel: str, event: dict[str, Any], viewer: Any) -> bool:
        """An event on a private channel; True asks for `refresh()` (deliveries are held
        meanwhile and re-checked with `admit` afterwards)."""
        return False

    async def refresh(self, ctx: Any) -> None:
        return None

    def __aiter__(self) -> Any:
        raise TypeError("LiveSource subscriptions are served by realtime.fanout over WebSocket")


class Sink(Protocol):
    """The socket side of a subscriber (realtime.connection.Connection)."""

    def push(self, frame: bytes) -> bool:
        """Queue a data frame; False when the socket is over its send limits."""
        ...

    def operation_ended(self, op_id: str, error: AppError | None) -> None:
        """The server ended `op_id` (error frame, or complete when `error` is None)."""
        ...


# --------------------------------------------------------------------------- documents


@dataclass
class OperationInfo:
    operation: OperationDefinitionNode
    kind: OperationType
    touched: frozenset[FieldRef]  # every (type, field) the document selects
    returns: dict[FieldRef, str]  # touched field -> name of the type it returns (unwrapped)
    root_only: frozenset[str] | None  # variables used only in root-field arguments (None: unknown)

    def key_variables(self, variables: dict[str, Any] | None) -> bytes:
        """The variables that can change a per-event execution, canonically encoded."""
        values = dict(variables or {})
        if self.root_only is not None:
            for name in self.root_only:
                values.pop(name, None)
        return orjson.dumps(values, option=orjson.OPT_SORT_KEYS) if values else b""


@dataclass
class Parsed:
    query: str
    document: DocumentNode | None
    errors: list[GraphQLError]
    operations: dict[str | None, OperationInfo] = field(default_factory=dict)

    def operation(self, name: str | None) -> OperationInfo | None:
        if name is None and len(self.operations) > 1:
            return None
        if name is None:
            return next(iter(self.operations.values()), None)
        return self.operations.get(name)


class _Touched(Visitor):
    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.found: dict[FieldRef, str] = {}

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        parent = self.type_info.get_parent_type()
        if parent is not None:
            returned = self.type_info.get_type()
            self.found[(parent.name, node.name.value)] = (
                get_named_type(returned).name if returned is not None else ""
            )


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.spreads: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.add(node.name.value)


def _variables_in(nodes: Iterable[Node], fragments: dict[str, FragmentDefinitionNode]) -> set[str]:
    names: set[str] = set()
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        collector = _Variables()
        visit(todo.pop(), collector)
        names |= collector.names
        for spread in collector.spreads - seen:
            seen.add(spread)
            if spread in fragments:
                todo.append(fragments[spread])
    return names


def _analyse(schema: GraphQLSchema, document: DocumentNode) -> dict[str | None, OperationInfo]:
    type_info = TypeInfo(schema)
    touched = _Touched(type_info)
    visit(document, TypeInfoVisitor(type_info, touched))
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    found: dict[str | None, OperationInfo] = {}
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        selections = definition.selection_set.selections
        root_only: frozenset[str] | None = None
        if all(isinstance(s, FieldNode) for s in selections):
            in_args: set[str] = set()
            elsewhere: set[str] = set()
            for sel in selections:
                assert isinstance(sel, FieldNode)
                in_args |= _variables_in(sel.arguments or (), fragments)
                rest: list[Node] = list(sel.directives or ())
                if sel.selection_set is not None:
                    rest.append(sel.selection_set)
                elsewhere |= _variables_in(rest, fragments)
            elsewhere |= _variables_in(definition.directives or (), fragments)
            root_only = frozenset(in_args - elsewhere)
        name = definition.name.value if definition.name else None
        found[name] = OperationInfo(
            definition, definition.operation, frozenset(touched.found), dict(touched.found), root_only
        )
    return found


class DocumentCache:
    """Parsed and validated (standard rules) documents by query text, bounded LRU.

    The operation limits (`limit_rules`, which depend on the variables) are checked per
    operation by the caller; they are cheap compared with parsing and full validation.
    """

    def __init__(self, schema: GraphQLSchema, *, max_tokens: int | None, size: int = DOCUMENT_CACHE_SIZE) -> None:
        self.schema = schema
        self.max_tokens = max_tokens
        self.size = size
        self._entries: OrderedDict[str, Parsed] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, query: str) -> Parsed:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            self.hits += 1
            return entry
        self.misses += 1
        entry = self._build(query)
        self._entries[query] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def _build(self, query: str) -> Parsed:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError as error:
            return Parsed(query, None, [error])
        errors = validate(self.schema, document, specified_rules)
        if errors:
            return Parsed(query, document, list(errors))
        return Parsed(query, document, [], _analyse(self.schema, document))


# ------------------------------------------------------------------------- subscribers


class Subscriber:
    """One running subscription of one socket (no task, queue or generator of its own)."""

    __slots__ = (
        "active", "channels", "counted", "filling", "group", "held", "op_id", "pos", "prefix", "ready",
        "refresh_again", "refreshing", "sink", "source", "target", "viewer",
    )

    def __init__(self, sink: Sink, op_id: str, prefix: bytes, viewer: Any, source: LiveSource) -> None:
        self.sink = sink
        self.op_id = op_id
        self.prefix = prefix
        self.viewer = viewer
        self.source = source
        self.group: Group | None = None
        self.channels: list[str] = []
        self.active = True
        self.ready = False  # started (non-positioned) — positioned ones use `filling`
        self.counted = False
        self.pos: int | None = None  # last delivered position (positioned)
        self.filling = source.positioned  # positioned: replaying from the database
        self.target = 0  # highest live position seen while filling
        self.held: list[dict[str, Any]] | None = None  # deliveries held during a refresh
        self.refreshing = False
        self.refresh_again = False


class Group:
    """Subscribers that receive byte-identical payloads for each event."""

    def __init__(self, engine: Engine, key: Hashable, executor: Executor, source: LiveSource, variants: bool) -> None:
        self.engine = engine
        self.key = key
        self.executor = executor
        self.source = source
        self.variants = variants
        self.members: dict[int, Subscriber] = {}
        self._snapshot: tuple[Subscriber, ...] | None = ()
        self.fill_task: asyncio.Task[None] | None = None
        self.timer_task: asyncio.Task[None] | None = None

    def snapshot(self) -> tuple[Subscriber, ...]:
        if self._snapshot is None:
            self._snapshot = tuple(self.members.values())
        return self._snapshot

    def add(self, sub: Subscriber) -> None:
        self.members[id(sub)] = sub
        self._snapshot = None
        sub.group = self

    def remove(self, sub: Subscriber) -> bool:
        if self.members.pop(id(sub), None) is None:
            return False
        self._snapshot = None
        return True

    # Execution ------------------------------------------------------------------------

    async def payload(self, event: dict[str, Any] | None, viewer: Any) -> bytes | None:
        """Execute the selection set for `event` once; the serialised `payload` JSON."""
        ctx = self.engine.make_context(viewer)
        root = self.source.root(event, ctx)
        if inspect.isawaitable(root):
            root = await root
        if root is None:
            return None
        executor = self.executor.build_per_event_executor(root)
        executor.context_value = ctx
        result: Any = execute_subscription_event(executor)
        if inspect.isawaitable(result):
            result = await result
        errors = self.engine.format_errors(list(result.errors), ctx) if result.errors else None
        return result_payload(result.data, errors)

    async def _payload_for(
        self, cache: dict[Hashable, bytes | None], event: dict[str, Any] | None, sub: Subscriber
    ) -> bytes | None:
        variant = self.source.variant(event, sub.viewer) if self.variants and event is not None else None
        found = cache.get(variant, _MISSING)
        if found is _MISSING:
            found = cache[variant] = await self.payload(event, sub.viewer)
        return found

    # Live events -------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        source = self.source
        kind = event.get("type")
        if kind in source.control_types:
            for sub in self.snapshot():
                if sub.active:
                    error = sub.source.control(event, sub.viewer)
                    if error is not None:
                        self.engine.end(sub, error)
        if kind in source.event_types:
            await self.deliver(event)

    async def deliver(self, event: dict[str, Any]) -> None:
        source = self.source
        positioned = source.positioned
        pos = source.position(event) if positioned else 0
        cache: dict[Hashable, bytes | None] = {}
        sent = 0
        for sub in self.snapshot():
            if not sub.active:
                continue
            if positioned:
                if sub.filling:
                    if pos > sub.target:
                        sub.target = pos
                    continue
                assert sub.pos is not None
                if pos <= sub.pos:
                    continue  # already delivered (replayed, or a duplicate)
                if pos != sub.pos + 1:
                    sub.filling = True  # a jump: fill from the database first
                    sub.target = pos
                    self.start_fill()
                    continue
            elif not sub.ready:
                continue
            if source.filtered and not sub.source.admit(event, sub.viewer):
                continue
            if sub.held is not None:
                sub.held.append(event)
                continue
            payload = await self._payload_for(cache, event, sub)
            if payload is None or not sub.active:
                continue
            if positioned:
                if sub.filling or sub.pos != pos - 1:
                    continue  # changed state while we executed
                sub.pos = pos
            self.engine.send(sub, payload)
            sent += 1
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def on_gap(self) -> None:
        """The hub may have lost events: positioned subscribers fill from the database,
        the others end with RESUME_REQUIRED."""
        if self.source.positioned:
            for sub in self.snapshot():
                if sub.active and not sub.filling:
                    sub.filling = True
                    sub.target = sub.pos or 0
            self.start_fill()
            return
        for sub in self.snapshot():
            if sub.active:
                self.engine.end(sub, ResumeRequired("Events may have been lost; resubscribe"))

    # Filling from the database -------------------------------------------------------

    def start_fill(self) -> None:
        if self.fill_task is None and self.members:
            self.fill_task = self.engine.spawn(self._fill(), name="realtime-fill")

    async def _fill(self) -> None:
        source = self.source
        try:
            while True:
                filling = [s for s in self.snapshot() if s.active and s.filling and s.pos is not None]
                if not filling:
                    return
                start = min(s.pos for s in filling if s.pos is not None)
                # Targets known before the read: what the read must have found.
                known = {id(s): s.target for s in filling}
                ctx = self.engine.make_context(filling[0].viewer)
                try:
                    events = await source.replay(ctx, start, REPLAY_BATCH)
                    allowed = await source.still_allowed(ctx, {s.viewer.user_id for s in filling})
                except AppError as error:
                    for sub in filling:
                        self.engine.end(sub, error)
                    continue
                except Exception:
                    log.exception("replay failed; ending the filling subscribers with RESUME_REQUIRED")
                    for sub in filling:
                        self.engine.end(sub, ResumeRequired("The server could not replay; resubscribe"))
                    continue
                for sub in filling:
                    if sub.active and sub.viewer.user_id not in allowed:
                        self.engine.end(sub, source.denied())
                before = {id(s): s.pos for s in filling}
                for event in events:
                    pos = source.position(event)
                    cache: dict[Hashable, bytes | None] = {}
                    for sub in filling:
                        if not (sub.active and sub.filling) or sub.pos != pos - 1:
                            continue
                        if source.filtered and not sub.source.admit(event, sub.viewer):
                            sub.pos = pos
                            continue
                        payload = await self._payload_for(cache, event, sub)
                        if not (sub.active and sub.filling) or sub.pos != pos - 1:
                            continue
                        sub.pos = pos
                        if payload is not None:
                            self.engine.send(sub, payload)
                if len(events) < REPLAY_BATCH:
                    for sub in filling:
                        if not (sub.active and sub.filling):
                            continue
                        assert sub.pos is not None
                        if sub.pos >= sub.target:
                            sub.filling = False  # live from here: no await since the read
                        elif sub.pos == before[id(sub)] and known[id(sub)] > sub.pos:
                            # An event announced before the read is not in the database:
                            # the stream is broken (e.g. deleted); the client must resync.
                            self.engine.end(sub, ResumeRequired("Cannot catch up; resubscribe"))
                        # else: announced while we read: read again
                await asyncio.sleep(0)
        finally:
            self.fill_task = None

    # Timer-driven groups (adminMonitor) ----------------------------------------------------

    def start_timer(self) -> None:
        if self.timer_task is None and self.source.interval:
            self.timer_task = self.engine.spawn(self._tick(), name="realtime-timer")

    async def _tick(self) -> None:
        interval = float(self.source.interval or 1)
        while self.members:
            await asyncio.sleep(interval)
            ready = [s for s in self.snapshot() if s.active and s.ready]
            if not ready:
                continue
            try:
                payload = await self.payload(None, ready[0].viewer)
            except Exception:
                log.exception("timer subscription failed")
                continue
            if payload is None:
                continue
            for sub in ready:
                if sub.active:
                    self.engine.send(sub, payload)


# ------------------------------------------------------------------------------- feeds


class Feed:
    """The hub listener of one channel: queues events, dispatches them in order."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self.groups: dict[Hashable, Group] = {}
        self.private: dict[int, Subscriber] = {}
        self.refs = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue: deque[Any] = deque()
        self.worker: asyncio.Task[None] | None = None

    # Hub listener (synchronous, on the hub's dispatch task) ----------------------------

    def on_event(self, channel: str, event: dict[str, Any]) -> None:
        if len(self.queue) >= MAX_FEED_BACKLOG:
            log.warning("channel %s fell %d events behind; treating it as a gap", channel, len(self.queue))
            self.queue.clear()
            self.queue.append(_GAP)
        else:
            self.queue.append(event)
        self._wake()

    def on_gap(self, channel: str) -> None:
        self.queue.append(_GAP)
        self._wake()

    def _wake(self) -> None:
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._run(), name=f"realtime-feed:{self.channel}")

    async def _run(self) -> None:
        try:
            while self.queue:
                item = self.queue.popleft()
                try:
                    if item is _GAP:
                        self._gap()
                    else:
                        await self._dispatch(item)
                except Exception:
                    log.exception("dispatching an event of %s failed", self.channel)
        finally:
            self.worker = None

    def _gap(self) -> None:
        for sub in tuple(self.private.values()):
            if sub.active:  # a private control feed lost events: refresh to be safe
                self.engine.refresh(sub)
        for group in tuple(self.groups.values()):
            group.on_gap()

    async def _dispatch(self, event: dict[str, Any]) -> None:
        for sub in tuple(self.private.values()):
            if sub.active and sub.source.on_private(self.channel, event, sub.viewer):
                self.engine.refresh(sub)
        for group in tuple(self.groups.values()):
            await group.on_event(event)


# ------------------------------------------------------------------------------ engine


ContextFactory = Callable[[Any], Any]
ErrorFormatter = Callable[[list[GraphQLError], Any], list[dict[str, Any]]]


class Engine:
    """Process-wide: documents, groups, feeds. One per app (built by realtime.ws)."""

    def __init__(
        self, schema: GraphQLSchema, hub: Any, *, make_context: ContextFactory, format_errors: ErrorFormatter,
        max_tokens: int | None = None, stats: Callable[[], Any] | None = None,
    ) -> None:
        self.schema = schema
        self.hub = hub
        self.make_context = make_context
        self.format_errors = format_errors
        self.documents = DocumentCache(schema, max_tokens=max_tokens)
        self._stats = stats or (lambda: None)
        self.groups: dict[Hashable, Group] = {}
        self.feeds: dict[str, Feed] = {}
        self.subscribers = 0
        self.deliveries = 0
        self.ended_slow = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    # Subscribing ------------------------------------------------------------------------

    async def subscribe(
        self, sink: Sink, op_id: str, prefix: bytes, parsed: Parsed, info: OperationInfo,
        variables: dict[str, Any] | None, operation_name: str | None, ctx: Any,
    ) -> Subscriber | list[dict[str, Any]]:
        """Start a subscription; a list of formatted errors if it is refused.

        `parsed` must be valid (standard and limit rules) and `info.kind` a subscription.
        The returned subscriber is live (or filling); cancel the caller's task to abort.
        """
        assert parsed.document is not None
        built = Executor.build(
            self.schema, parsed.document, None, ctx, variables, operation_name,
        )
        if isinstance(built, list):
            return self.format_errors(built, ctx)
        stream: Any = create_source_event_stream(built)
        if inspect.isawaitable(stream):
            stream = await stream
        if isinstance(stream, ExecutionResult):
            return self.format_errors(list(stream.errors or ()), ctx)
        if not isinstance(stream, LiveSource):
            raise TypeError(f"subscription resolvers must return a LiveSource, not {type(stream).__name__}")
        source = stream
        viewer = ctx.viewer
        per_viewer = bool(info.touched & source.viewer_fields)
        variants = False
        if info.touched & source.sender_fields and not per_viewer:
            carriers = {ref for ref, type_name in info.returns.items() if type_name in source.sender_types}
            variants = carriers <= source.sender_carriers
            per_viewer = not variants
        key = (
            parsed.query, operation_name, info.key_variables(variables), source.scope,
            (viewer.user_id, viewer.session_id) if per_viewer and viewer is not None else None,
        )
        sub = Subscriber(sink, op_id, prefix, viewer, source)
        try:
            for channel in (*source.channels, *source.private_channels):
                await self._acquire(channel)
                sub.channels.append(channel)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group(self, key, built, source, variants)
                for channel in source.channels:
                    self.feeds[channel].groups[key] = group
            group.add(sub)
            for channel in source.private_channels:
                self.feeds[channel].private[id(sub)] = sub
            self.subscribers += 1
            start = await source.start(ctx)
        except AppError as error:
            self._detach(sub)
            return self.format_errors([GraphQLError(error.message, original_error=error)], ctx)
        except BaseException:
            self._detach(sub)
            raise
        if not sub.active:
            return sub  # ended meanwhile (already reported to the sink)
        sub.counted = True
        stats = self._stats()
        if stats is not None:
            stats.subscription_started()
        if source.positioned:
            sub.pos = int(start or 0)
            group.start_fill()
        else:
            sub.ready = True
        if source.interval:
            group.start_timer()
            self.spawn(self._first_tick(sub), name="realtime-first-tick")
        return sub

    async def _first_tick(self, sub: Subscriber) -> None:
        if sub.group is None:
            return
        payload = await sub.group.payload(None, sub.viewer)
        if payload is not None and sub.active:
            self.send(sub, payload)

    # Delivering and ending ---------------------------------------------------------------

    def send(self, sub: Subscriber, payload: bytes) -> None:
        if sub.sink.push(sub.prefix + payload + b"}"):
            self.deliveries += 1
            return
        self.ended_slow += 1
        self.end(sub, ResumeRequired("Subscription fell behind; resubscribe with your last cursor"))

    def end(self, sub: Subscriber, error: AppError | None) -> None:
        """End `sub` from the server side and tell its socket (error, or complete)."""
        if not sub.active:
            return
        self._detach(sub)
        sub.sink.operation_ended(sub.op_id, error)

    def stop(self, sub: Subscriber) -> None:
        """The client ended `sub` (complete/stop) or its socket went away."""
        self._detach(sub)

    def _detach(self, sub: Subscriber) -> None:
        was_active = sub.active
        sub.active = False
        group = sub.group
        if group is not None and group.remove(sub):
            self.subscribers -= 1
            if not group.members:
                self._drop_group(group)
        for channel in sub.channels:
            feed = self.feeds.get(channel)
            if feed is not None:
                feed.private.pop(id(sub), None)
            self._release(channel)
        sub.channels = []
        if was_active and sub.counted:
            sub.counted = False
            stats = self._stats()
            if stats is not None:
                stats.subscription_ended()

    def _drop_group(self, group: Group) -> None:
        if self.groups.get(group.key) is group:
            del self.groups[group.key]
        for channel in group.source.channels:
            feed = self.feeds.get(channel)
            if feed is not None and feed.groups.get(group.key) is group:
                del feed.groups[group.key]
        for task in (group.fill_task, group.timer_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    # Held deliveries while a private refresh runs (presence visibility) ----------------

    def refresh(self, sub: Subscriber) -> None:
        if sub.held is None:
            sub.held = []
        if sub.refreshing:
            sub.refresh_again = True
            return
        sub.refreshing = True
        self.spawn(self._refresh(sub), name="realtime-refresh")

    async def _refresh(self, sub: Subscriber) -> None:
        try:
            while sub.active:
                sub.refresh_again = False
                try:
                    await sub.source.refresh(self.make_context(sub.viewer))
                except Exception:
                    log.exception("refreshing a subscription failed")
                    self.end(sub, ResumeRequired("The server could not refresh this subscription; resubscribe"))
                    return
                if sub.refresh_again:
                    continue
                while sub.held and not sub.refresh_again and sub.active and sub.group is not None:
                    event = sub.held.pop(0)
                    if sub.source.admit(event, sub.viewer):
                        payload = await sub.group.payload(event, sub.viewer)
                        if payload is not None and sub.active:
                            self.send(sub, payload)
                if sub.refresh_again:
                    continue
                sub.held = None
                return
        finally:
            sub.refreshing = False

    # Channels --------------------------------------------------------------------------

    async def _acquire(self, channel: str) -> Feed:
        feed = self.feeds.get(channel)
        if feed is None:
            feed = self.feeds[channel] = Feed(self, channel)
            feed.refs += 1
            try:
                await self.hub.subscribe(channel, feed)
            except BaseException as exc:
                if not feed.ready.done():
                    feed.ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
                    feed.ready.exception()  # retrieved: nobody else may be waiting
                if self.feeds.get(channel) is feed:
                    del self.feeds[channel]
                raise
            feed.ready.set_result(None)
            return feed
        feed.refs += 1
        try:
            await asyncio.shield(feed.ready)
        except BaseException:
            feed.refs -= 1
            raise
        return feed

    def _release(self, channel: str) -> None:
        feed = self.feeds.get(channel)
        if feed is None:
            return
        feed.refs -= 1
        if feed.refs <= 0:
            del self.feeds[channel]
            if feed.ready.done() and feed.ready.exception() is None:
                self.spawn(self.hub.unsubscribe(channel, feed), name="realtime-unsubscribe")

    # Tasks -------------------------------------------------------------------------------

    def spawn(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("realtime task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for feed in list(self.feeds.values()):
            if feed.worker is not None:
                tasks.append(feed.worker)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except BaseException:
                pass

    def stats(self) -> dict[str, int]:
        return {
            "subscribers": self.subscribers,
            "groups": len(self.groups),
            "channels": len(self.feeds),
            "deliveries": self.deliveries,
            "ended_slow": self.ended_slow,
        }
