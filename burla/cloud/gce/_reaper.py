"""Run by the head of a GCE cluster: no node VM of the cluster bills for nothing.

Two ways a node VM is deleted:

- it stops heart-beating: it is given ``reap_after_s`` to come back (a
  restart, a network blip), then its VM is deleted;
- it is done: a sweep every ``sweep_s`` deletes the cluster's node VMs that
  are TERMINATED, STOPPED or SUSPENDED (a node that shut itself down when
  idle, a preempted spot VM, one stopped by hand), whose disks would
  otherwise go on billing.

Config (JSON): project, zones, api_endpoint, cluster, reap_after_s, sweep_s.
The head's VM runs under a service account holding only what these calls
need (``_iam.HEAD_PERMISSIONS``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..._errors import ProviderError
from ._api import Compute

log = logging.getLogger("burla.gce.reaper")
DONE = frozenset({"TERMINATED", "STOPPED", "SUSPENDED"})


class Reaper:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.api = Compute(config["project"], config.get("api_endpoint"))
        self.zones = tuple(config["zones"])
        self.after = float(config.get("reap_after_s", 60.0))
        self.sweep_s = float(config.get("sweep_s", 30.0))
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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

    async def _nodes(self) -> list[tuple[str, Any]]:
        found = await asyncio.to_thread(lambda: list(self.api.list_instances(self.zones, self.config["cluster"])))
        return [(zone, inst) for zone, inst in found if inst.labels.get("burla-role") == "node"]

    async def _delete(self, node_id: str) -> None:
        try:
            for zone, inst in await self._nodes():
                if inst.name == node_id:
                    log.warning("node %s stopped heart-beating %gs ago: deleting its VM", node_id, self.after)
                    await asyncio.to_thread(self.api.delete_instance, zone, inst.name)
        except ProviderError as e:
            log.error("could not delete lost node %s: %s", node_id, e)

    async def sweep(self) -> int:
        """Delete the cluster's node VMs that are done; how many."""
        done = [(zone, inst) for zone, inst in await self._nodes() if inst.status in DONE]
        for _, inst in done:
            log.warning("node VM %s is %s: deleting it (its disk would bill on)", inst.name, inst.status)
        await asyncio.gather(*(asyncio.to_thread(self.api.delete_instance, zone, inst.name) for zone, inst in done))
        return len(done)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except ProviderError as e:
                log.error("could not sweep the cluster's stopped node VMs: %s", e)
            await asyncio.sleep(self.sweep_s)
