"""Run by the head of a GCE cluster: delete node VMs that stop heart-beating.

A node that leaves the head is given ``reap_after_s`` to come back (a
restart, a network blip); after that its VM is deleted so it cannot go on
billing.  Config (JSON): project, zones, api_endpoint, cluster, reap_after_s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..._errors import ProviderError
from ._api import Compute

log = logging.getLogger("burla.gce.reaper")


class Reaper:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.api = Compute(config["project"], config.get("api_endpoint"))
        self.zones = tuple(config["zones"])
        self.after = float(config.get("reap_after_s", 60.0))
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def node_joined(self, node_id: str) -> None:
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()

    def node_lost(self, node_id: str) -> None:
        loop = asyncio.get_running_loop()
        self.node_joined(node_id)
        self._timers[node_id] = loop.call_later(self.after, self._start_delete, node_id)

    def _start_delete(self, node_id: str) -> None:
        self._timers.pop(node_id, None)
        task = asyncio.get_running_loop().create_task(self._delete(node_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete(self, node_id: str) -> None:
        try:
            found = await asyncio.to_thread(lambda: list(self.api.list_instances(self.zones, self.config["cluster"])))
            for zone, inst in found:
                if inst.name == node_id:
                    log.warning("node %s stopped heart-beating %gs ago: deleting its VM", node_id, self.after)
                    await asyncio.to_thread(self.api.delete_instance, zone, inst.name)
        except ProviderError as e:
            log.error("could not delete lost node %s: %s", node_id, e)
