"""Wires presence, typing and the deployment stats into Services (server lifespan).

Runs after `realtime.wiring`, which creates the hub (`extras["hub"]`) and
`services.events`. Sets `services.presence` (realtime.presence.Presence),
`services.typing` (realtime.typing.Typing) and `services.extras["stats"]`
(realtime.stats.Stats); presence and stats share one Redis client on the broadcast
URL's server (none with memory://) and this instance's id (`extras["instance_id"]`).
"""
from __future__ import annotations

import contextlib
from typing import Any

from realtime.events import Publisher
from realtime.presence import Presence, create_redis, new_instance_id
from realtime.stats import Stats
from realtime.typing import Typing
from resolvers.presence import choice_loader, last_seen_writer


async def setup(services: Any) -> None:
    settings = services.settings
    publisher = services.events
    if publisher is None:  # realtime not wired: events go nowhere, state still works
        publisher = Publisher(services.extras.get("hub"))
    instance_id = services.extras.setdefault("instance_id", new_instance_id())
    redis = create_redis(settings.broadcast_url)
    services.extras["presence_redis"] = redis
    presence = Presence(
        settings, publisher, redis=redis, instance_id=instance_id,
        store_last_seen=last_seen_writer(services.db), load_choices=choice_loader(services.db),
    )
    await presence.start()
    stats = Stats(settings, redis=redis, instance_id=instance_id, presence=presence)
    await stats.start()
    services.presence = presence
    services.typing = Typing(settings, publisher)
    services.extras["stats"] = stats


async def teardown(services: Any) -> None:
    stats = services.extras.pop("stats", None)
    if stats is not None:
        await stats.close()
    if services.typing is not None:
        await services.typing.close()
        services.typing = None
    if services.presence is not None:
        await services.presence.close()
        services.presence = None
    redis = services.extras.pop("presence_redis", None)
    if redis is not None:
        with contextlib.suppress(Exception):
            await redis.aclose()
