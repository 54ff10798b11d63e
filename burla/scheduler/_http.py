"""The head's JSON API (aiohttp), served inside the head's own event loop.

Every route requires the cluster token: ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

if TYPE_CHECKING:
    from ._head import Head

HEAD_KEY: web.AppKey["Head"] = web.AppKey("head")


@web.middleware
async def _require_token(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    head = request.app[HEAD_KEY]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), head.token.encode()):
        return web.json_response({"error": "missing or wrong token: send 'Authorization: Bearer <cluster token>'"}, status=401)
    return await handler(request)


def cluster_summary(head: "Head") -> dict[str, Any]:
    state = head.state
    return {
        "name": head.name,
        "uptime_s": round(time.time() - head.started_at, 1),
        "nodes": [
            {"node_id": n.node_id, "host": n.host, "cpus": n.cpus, "ram_bytes": n.ram_bytes,
             "workers": n.n_workers, "job_id": n.job_id}
            for n in state.nodes.values()
        ],
        "workers": sum(n.n_workers for n in state.nodes.values()),
        "jobs_running": len(state.jobs),
    }


def jobs_summary(head: "Head") -> list[dict[str, Any]]:
    running = [
        {"job_id": j.job_id, "function": j.spec.function_name, "status": "running", "workers": j.workers,
         "inputs_received": j.received, "results_delivered": j.delivered, "total": j.total}
        for j in head.state.jobs.values()
    ]
    done = [{"job_id": job_id, "status": status} for job_id, status in reversed(head.state.finished)]
    return running + done


async def _cluster(request: web.Request) -> web.Response:
    return web.json_response(cluster_summary(request.app[HEAD_KEY]))


async def _jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": jobs_summary(request.app[HEAD_KEY])})


async def start_http(head: "Head", sock: socket.socket) -> web.AppRunner:
    app = web.Application(middlewares=[_require_token])
    app[HEAD_KEY] = head
    app.router.add_get("/v1/cluster", _cluster)
    app.router.add_get("/v1/jobs", _jobs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner
