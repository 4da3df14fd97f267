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
- Bounded: a socket refuses a data frame past its send limits, and that subscriber ends
  with RESUME_REQUIRED (it resumes by cursor); a feed whose backlog passes
  `MAX_FEED_BACKLOG` drops it and treats it as a gap.

Modules: `realtime.live` (LiveSource, Sink), `realtime.documents` (the document cache
and per-operation analysis), `realtime.groups` (Subscriber, Group, Feed), this one (the
Engine: subscribing, ending, channels, held refreshes). None knows the database, a
schema module or a socket: they run graphql-core's executor on the schema given, call
the `LiveSource` methods the schema layer implements, and talk to sockets through the
small `Sink` protocol.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Hashable
from typing import Any

from graphql import GraphQLError, GraphQLSchema
from graphql.execution import ExecutionResult, Executor, create_source_event_stream

from errors import AppError, ResumeRequired
from realtime.documents import DocumentCache, OperationInfo, Parsed
from realtime.groups import Feed, Group, Subscriber
from realtime.live import LiveSource, Sink

log = logging.getLogger("parley.realtime")

__all__ = ["Engine", "LiveSource", "Sink", "Subscriber"]


ContextFactory = Callable[[Any], Any]
ErrorFormatter = Callable[[list[GraphQLError], Any], list[dict[str, Any]]]


class Engine:
    """Process-wide: documents, groups, feeds. One per app (built by realtime.ws)."""

    def __init__(
        self, schema: GraphQLSchema, hub: Any, *, make_context: ContextFactory, format_errors: ErrorFormatter,
        max_tokens: int | None = None, stats: Callable[[], Any] | None = None,
        refuse: Callable[[Any], GraphQLError | None] | None = None,
    ) -> None:
        self.schema = schema
        self.hub = hub
        self.make_context = make_context
        self.format_errors = format_errors
        self.documents = DocumentCache(schema, max_tokens=max_tokens, refuse=refuse)
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
            if source.channels:
                source.channel_state = self.feeds[source.channels[0]].state
            start = await source.start(ctx)
        except AppError as error:
            self._detach(sub)
            return self.format_errors([GraphQLError(error.message, original_error=error)], ctx)
        except ConnectionError:  # the hub cannot reach its transport (Redis down)
            self._detach(sub)
            log.warning("subscribing to the hub failed", exc_info=True)
            unavailable = ResumeRequired("The live event feed is unavailable; retry shortly")
            return self.format_errors([GraphQLError(unavailable.message, original_error=unavailable)], ctx)
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
            end = source.known_end
            if end is not None and sub.pos >= end and sub.target <= sub.pos:
                # Nothing after `pos` was committed before the feed could see it, and
                # nothing after it reached the group yet: live at once, no replay read.
                sub.filling = False
            else:
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
        self.shed(sub)

    def shed(self, sub: Subscriber) -> None:
        """`sub`'s socket did not take a frame (over its send limits): end it."""
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
            feed.state.close()
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
