"""The head's HTTP side (aiohttp): JSON API, live events and the dashboard.

Every route but the login page and static files requires the cluster token,
either as ``Authorization: Bearer <token>`` or as the session cookie set by
the login form (HttpOnly, SameSite=Strict; its value is derived from the
token, never the token itself).  State-changing requests authenticated by
cookie must also carry the ``X-CSRF-Token`` header from ``GET /v1/session``.
Unauthenticated requests get 401 and no data; a source that sent more than
``_attempts.MAX_FAILURES`` wrong tokens in a minute gets 429 without its
next guesses being checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from ..transport._address import listen_backlog
from ._attempts import Attempts
from ._monitor import JobRecord
from ._view import HeadView

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEAD_KEY: web.AppKey[HeadView] = web.AppKey("head")
TOKEN_KEY: web.AppKey[str] = web.AppKey("token")
CLOSING_KEY: web.AppKey[asyncio.Event] = web.AppKey("closing")
EVENTS_INTERVAL = 0.5  # seconds between server-sent snapshots
COOKIE = "burla_session"
SESSION_SECONDS = 12 * 3600  # a dashboard login lasts this long (issue 11: it used to never expire)
PUBLIC = ("/login", "/static/")
# Nothing here is meant to be framed, sniffed or to load from elsewhere (clickjacking of cancel
# and restart, issue 11).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
REVOKED_KEY: web.AppKey[dict[str, float]] = web.AppKey("revoked")  # session id -> its expiry
ATTEMPTS_KEY: web.AppKey[Attempts] = web.AppKey("attempts")  # wrong tokens per source (login + Bearer)
_STATIC = resources.files("burla.scheduler") / "static"


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _new_session(token: str) -> str:
    """A session cookie: a random id and an expiry, signed with the token."""
    sid, expires = secrets.token_urlsafe(16), int(time.time()) + SESSION_SECONDS
    return f"{sid}.{expires}.{_derive(token, f'session:{sid}:{expires}')}"


def _session_id(request: web.Request) -> str | None:
    """The id of the request's valid, unexpired, not logged-out session, if any."""
    sid, _, rest = request.cookies.get(COOKIE, "").partition(".")
    expires, _, mac = rest.partition(".")
    if not (sid and expires.isdigit() and mac) or int(expires) < time.time():
        return None
    if not _equal(mac, _derive(request.app[TOKEN_KEY], f"session:{sid}:{expires}")):
        return None
    return None if sid in request.app[REVOKED_KEY] else sid


def _csrf(token: str, sid: str) -> str:
    return _derive(token, f"csrf:{sid}")


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as e:  # redirects and errors carry them too
        e.headers.update(SECURITY_HEADERS)
        raise
    resp.headers.update(SECURITY_HEADERS)
    return resp


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PUBLIC):
        return await handler(request)
    token = request.app[TOKEN_KEY]
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        if (limited := _too_many(request)) is not None:
            return limited
        if _equal(bearer[7:].strip(), token):
            return await handler(request)
        request.app[ATTEMPTS_KEY].failed(_source(request))
    if (sid := _session_id(request)) is not None:
        csrf_ok = _equal(request.headers.get("X-CSRF-Token", ""), _csrf(token, sid))
        if request.method not in ("GET", "HEAD") and not csrf_ok:
            return web.json_response({"error": "missing or wrong X-CSRF-Token header"}, status=403)
        return await handler(request)
    if request.path.startswith("/v1/"):
        return web.json_response({"error": "missing or wrong token: send 'Authorization: Bearer <cluster token>'"},
                                 status=401)
    return _login_page(status=401)


def _source(request: web.Request) -> str:
    return request.remote or "?"


def _too_many(request: web.Request) -> web.Response | None:
    """429 while the request's source has sent too many wrong tokens lately."""
    wait = request.app[ATTEMPTS_KEY].wait(_source(request))
    if not wait:
        return None
    retry = str(int(wait) + 1)
    message = (f"too many wrong tokens from {_source(request)}: try again in {retry} s "
               f"(at most {request.app[ATTEMPTS_KEY].max_failures} a minute)")
    if request.path.startswith("/v1/"):
        return web.json_response({"error": message}, status=429, headers={"Retry-After": retry})
    resp = _login_page(status=429, message=message[0].upper() + message[1:] + ".")
    resp.headers["Retry-After"] = retry
    return resp


def _login_page(status: int = 200, message: str = "") -> web.Response:
    html = (_STATIC / "login.html").read_text().replace("{{message}}", message)
    return web.Response(text=html, content_type="text/html", status=status)


# --- pages -------------------------------------------------------------------------------


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=(_STATIC / "index.html").read_text(), content_type="text/html")


async def _login_form(request: web.Request) -> web.Response:
    return _login_page()


async def _login(request: web.Request) -> web.Response:
    token = request.app[TOKEN_KEY]
    if (limited := _too_many(request)) is not None:
        return limited
    form = await request.post()
    if not _equal(str(form.get("token", "")), token):
        request.app[ATTEMPTS_KEY].failed(_source(request))
        return _login_page(status=401, message="That is not this cluster's token.")
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(COOKIE, _new_session(token), httponly=True, samesite="Strict", path="/", max_age=SESSION_SECONDS,
                    secure=request.secure)  # over HTTPS, a cookie the browser never sends in plaintext
    raise resp


async def _logout(request: web.Request) -> web.Response:
    """The session ends here, not only in this browser: its cookie is refused from now on."""
    sid = _session_id(request)  # logging out needs the session (and its CSRF header): see _auth
    revoked, now = request.app[REVOKED_KEY], time.time()
    for old in [k for k, until in revoked.items() if until < now]:  # expired ones need no list
        del revoked[old]
    if sid:
        revoked[sid] = now + SESSION_SECONDS
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ("app.js", "login.js", "style.css"):
        raise web.HTTPNotFound()
    kind = "application/javascript" if name.endswith(".js") else "text/css"
    return web.Response(text=(_STATIC / name).read_text(), content_type=kind)


# --- JSON API ------------------------------------------------------------------------------


def jobs_summary(head: HeadView) -> list[dict[str, Any]]:
    """The dashboard's record of each job, with the scheduler's word on its state (a restored
    job waiting for its client, a detached one's results waiting for a reader, expired...)."""
    out = []
    for job in reversed(head.monitor.jobs.values()):
        summary = head.monitor.summary(job)
        info = head.job_info(job.job_id)
        if info.state != "unknown":
            summary["state"] = info.state
        summary["detached"], summary["results_waiting"] = info.detached, info.waiting
        out.append(summary)
    return out


def _job(request: web.Request) -> JobRecord:
    job = request.app[HEAD_KEY].monitor.jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such job"}), content_type="application/json")
    return job


def _int(request: web.Request, key: str, default: int, hi: int) -> int:
    try:
        return max(0, min(int(request.query.get(key, default)), hi))
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{key} must be an integer"}),
                                 content_type="application/json") from None


async def _get_session(request: web.Request) -> web.Response:
    sid = _session_id(request)
    return web.json_response({"csrf": _csrf(request.app[TOKEN_KEY], sid) if sid else ""})


async def _get_cluster(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEAD_KEY].cluster_summary())


async def _get_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": jobs_summary(request.app[HEAD_KEY])})


async def _get_job(request: web.Request) -> web.Response:
    offset, limit = _int(request, "offset", 0, 10**12), _int(request, "limit", 500, 5000)
    return web.json_response(request.app[HEAD_KEY].monitor.detail(_job(request), offset, limit))


async def _get_input(request: web.Request) -> web.Response:
    index = int(request.match_info["index"])  # the route only matches digits
    return web.json_response(request.app[HEAD_KEY].monitor.input_logs(_job(request), index))


async def _cancel(request: web.Request) -> web.Response:
    job = _job(request)
    if not request.app[HEAD_KEY].cancel_job(job.job_id, "canceled from the dashboard"):
        return web.json_response({"error": f"job is {job.state}, not running"}, status=409)
    return web.json_response({"canceled": job.job_id})


async def _restart(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    if not request.app[HEAD_KEY].restart_node(node_id):
        return web.json_response({"error": "no such node"}, status=404)
    return web.json_response({"restarted": node_id})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot every ``interval`` seconds."""
    head, closing = request.app[HEAD_KEY], request.app[CLOSING_KEY]
    job_id = request.query.get("job")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    while not closing.is_set():
        snapshot: dict[str, Any] = {"cluster": head.cluster_summary(), "jobs": jobs_summary(head)}
        if job_id and (job := head.monitor.jobs.get(job_id)):
            snapshot["job"] = head.monitor.detail(job, _int(request, "offset", 0, 10**12), 500)
        try:
            await resp.write(f"data: {json.dumps(snapshot)}\n\n".encode())
        except (ConnectionError, RuntimeError):
            return resp
        try:
            await asyncio.wait_for(closing.wait(), EVENTS_INTERVAL)
        except TimeoutError:
            pass
    return resp


async def _streams_end_on_shutdown(app: web.Application) -> AsyncIterator[None]:
    """The app's life: at shutdown, event streams end at once instead of
    holding the runner for its shutdown timeout."""
    app[CLOSING_KEY] = asyncio.Event()
    yield
    app[CLOSING_KEY].set()


async def start_http(head: HeadView, token: str, sock: socket.socket,
                     tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve the API and dashboard on ``sock`` (HTTPS with ``tls``); ``await runner.cleanup()`` stops it."""
    app = web.Application(middlewares=[_headers, _auth], client_max_size=64 * 1024)
    app[HEAD_KEY] = head
    app[TOKEN_KEY] = token
    app[REVOKED_KEY] = {}
    app[ATTEMPTS_KEY] = Attempts()
    app.cleanup_ctx.append(_streams_end_on_shutdown)
    r = app.router
    r.add_get("/", _index)
    r.add_get("/login", _login_form)
    r.add_post("/login", _login)
    r.add_post("/logout", _logout)
    r.add_get("/static/{name}", _static)
    r.add_get("/v1/session", _get_session)
    r.add_get("/v1/cluster", _get_cluster)
    r.add_get("/v1/jobs", _get_jobs)
    r.add_get("/v1/jobs/{job_id}", _get_job)
    r.add_get("/v1/jobs/{job_id}/inputs/{index:\\d+}", _get_input)
    r.add_post("/v1/jobs/{job_id}/cancel", _cancel)
    r.add_post("/v1/nodes/{node_id}/restart", _restart)
    r.add_get("/v1/events", _events)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    # (backlog: its default of 128 would re-listen())
    await web.SockSite(runner, sock, backlog=listen_backlog(), ssl_context=tls).start()
    return runner
