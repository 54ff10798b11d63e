"""The head's HTTP API and dashboard endpoints, over real HTTP to a real cluster."""

import copy
import http.cookiejar
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import wait_until


class Http:
    def __init__(self, base: str, token: str | None = None):
        self.base = base
        self.token = token
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method: str, path: str, data: dict | None = None, headers: dict | None = None):
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=hdrs, method=method)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def json(self, method: str, path: str, **kw):
        status, body, _ = self.request(method, path, **kw)
        return status, json.loads(body)


@pytest.fixture
def api(on_cluster):
    return Http(on_cluster.record.http, on_cluster.record.token)


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/cluster"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/inputs/0"),
    ("GET", "/v1/events"), ("GET", "/v1/session"), ("POST", "/v1/jobs/x/cancel"), ("POST", "/v1/nodes/x/restart"),
])
def test_every_endpoint_needs_the_token(on_cluster, method, path):
    status, body, _ = Http(on_cluster.record.http).request(method, path)
    assert status == 401 and b"token" in body
    status, _, _ = Http(on_cluster.record.http, "wrong").request(method, path)
    assert status == 401


def test_dashboard_page_without_token_is_the_login_form_only(on_cluster):
    status, body, _ = Http(on_cluster.record.http).request("GET", "/")
    assert status == 401 and b'name="token"' in body and b"nodes" not in body.lower().split(b"<form")[0]


def test_login_sets_a_safe_cookie_and_csrf_guards_posts(on_cluster):
    web = Http(on_cluster.record.http)
    status, _, _ = web.request("POST", "/login", {"token": "nope"})
    assert status == 401
    status, _, _headers = web.request("POST", "/login", {"token": on_cluster.record.token})
    assert status == 200  # redirected to the dashboard
    cookie = next(c for c in web.jar if c.name == "burla_session")
    assert cookie.value != on_cluster.record.token
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Strict"
    status, session = web.json("GET", "/v1/session")
    assert status == 200 and session["csrf"]
    status, _ = web.json("POST", "/v1/nodes/none/restart")
    assert status == 403  # cookie without CSRF header
    status, _ = web.json("POST", "/v1/nodes/none/restart", headers={"X-CSRF-Token": session["csrf"]})
    assert status == 404  # got past auth and CSRF


def test_a_session_expires_and_logging_out_ends_it_for_good(on_cluster):
    import time

    web = Http(on_cluster.record.http)
    web.request("POST", "/login", {"token": on_cluster.record.token})
    cookie = next(c for c in web.jar if c.name == "burla_session")
    sid, expires, _mac = cookie.value.split(".")
    assert time.time() + 11 * 3600 < int(expires) <= time.time() + 12 * 3600 + 5  # 12 hours
    assert cookie.expires is not None  # the browser drops it too
    _, session = web.json("GET", "/v1/session")
    stolen = Http(on_cluster.record.http)  # a copy of the cookie, as a thief would keep it
    stolen.jar.set_cookie(cookie)
    assert stolen.json("GET", "/v1/cluster")[0] == 200
    forged = copy.copy(cookie)
    forged.value = f"{sid}.{int(expires) + 3600}.{_mac}"
    other = Http(on_cluster.record.http)
    other.jar.set_cookie(forged)
    assert other.json("GET", "/v1/cluster")[0] == 401  # the expiry is signed
    web.request("POST", "/logout", headers={"X-CSRF-Token": session["csrf"]})
    assert stolen.json("GET", "/v1/cluster")[0] == 401  # logged out: the copy is dead too


def test_wrong_tokens_are_rate_limited_per_source(clusters):
    from burla.scheduler._attempts import MAX_FAILURES

    cluster = clusters.start(nodes=1, workers_per_node=1)
    web = Http(cluster.record.http)
    web.request("POST", "/login", {"token": cluster.record.token})  # a session from before the attack
    guesser = Http(cluster.record.http)
    for i in range(MAX_FAILURES):
        wrong = {"token": f"guess{i}"} if i % 2 else None
        status, _, _ = (guesser.request("POST", "/login", wrong) if wrong
                        else Http(cluster.record.http, f"guess{i}").request("GET", "/v1/cluster"))
        assert status == 401
    status, body, headers = guesser.request("POST", "/login", {"token": cluster.record.token})
    assert status == 429 and b"Too many wrong tokens from 127.0.0.1" in body  # not even the right one is checked
    assert 50 <= int(headers["Retry-After"]) <= 61
    status, body = Http(cluster.record.http, cluster.record.token).json("GET", "/v1/cluster")
    assert status == 429 and "at most 20 a minute" in body["error"]
    assert web.json("GET", "/v1/cluster")[0] == 200  # a session that logged in before still works


def test_the_attempts_table_forgets_a_source_after_its_window():
    from burla.scheduler._attempts import Attempts

    now = [0.0]
    a = Attempts(clock=lambda: now[0], max_failures=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        now[0] = t
        assert a.wait("x") == 0.0
        a.failed("x")
    assert a.wait("x") == 40.0 and a.wait("y") == 0.0
    now[0] = 60.0
    assert a.wait("x") == 0.0  # the first failure left the window
    now[0] = 200.0
    assert a.wait("x") == 0.0 and not a._failures


def test_every_response_forbids_framing_sniffing_and_foreign_content(on_cluster):
    web = Http(on_cluster.record.http)
    for path in ("/login", "/", "/v1/cluster", "/static/app.js"):
        _status, _body, headers = web.request("GET", path)
        assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and "default-src 'self'" in \
            headers["Content-Security-Policy"], path


def test_cluster_shows_nodes_with_live_stats(api, on_cluster):
    def has_stats():
        return all(n["cpu_percent"] is not None for n in api.json("GET", "/v1/cluster")[1]["nodes"])

    wait_until(has_stats, 10, "node stats")
    status, c = api.json("GET", "/v1/cluster")
    node = c["nodes"][0]
    assert status == 200 and node["provider"] == "local" and node["workers"] == 2
    assert node["last_heartbeat_s"] < 5 and node["ram_used"] > 0 and node["address"]


def test_job_detail_inputs_logs_and_errors(api):
    def work(x):
        print(f"line {x} <b>")
        if x == 2:
            raise ValueError("two")
        return x

    rpm(work, range(5), raise_errors=False, spinner=False)
    _status, jobs = api.json("GET", "/v1/jobs")
    job = next(j for j in jobs["jobs"] if j["function"] == "work")
    assert job["state"] == "done" and job["done"] == 5 and job["failed"] == 1 and job["total"] == 5
    _status, detail = api.json("GET", f"/v1/jobs/{job['job_id']}")
    assert [i["state"] for i in detail["inputs"]] == ["done", "done", "failed", "done", "done"]
    assert all(i["node"] and i["worker"] is not None and i["duration_s"] >= 0 for i in detail["inputs"])
    assert detail["errors"][0]["index"] == 2 and "ValueError: two" in detail["errors"][0]["traceback"]
    _status, logs = api.json("GET", f"/v1/jobs/{job['job_id']}/inputs/3")
    assert logs["lines"] == [{"stream": "stdout", "text": "line 3 <b>"}]
    _status, logs = api.json("GET", f"/v1/jobs/{job['job_id']}/inputs/2")
    assert "ValueError" in logs["error"]["traceback"]
    assert api.json("GET", "/v1/jobs/nope")[0] == 404
    assert api.json("GET", f"/v1/jobs/{job['job_id']}?offset=x")[0] == 400


def test_cancel_from_the_api_stops_the_clients_job(api):
    errors = []

    def run():
        try:
            import time

            rpm(time.sleep, [30] * 4, spinner=False)
        except burla.JobCanceled as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    job_id = wait_until(lambda: next((j["job_id"] for j in api.json("GET", "/v1/jobs")[1]["jobs"]
                                      if j["state"] == "running"), None), 10, "the job to run")
    assert api.json("POST", f"/v1/jobs/{job_id}/cancel")[0] == 200
    t.join(10)
    assert errors and "dashboard" in str(errors[0])
    assert api.json("POST", f"/v1/jobs/{job_id}/cancel")[0] == 409


def test_restart_node_replaces_its_workers(api, on_cluster):
    import psutil

    node_pid = on_cluster.procs[1].pid
    before = {p.pid for p in psutil.Process(node_pid).children()}
    node_id = api.json("GET", "/v1/cluster")[1]["nodes"][0]["node_id"]
    assert api.json("POST", f"/v1/nodes/{node_id}/restart")[0] == 200

    def replaced():
        now = {p.pid for p in psutil.Process(node_pid).children()}
        return len(now) == 2 and not now & before

    wait_until(replaced, 10, "new worker processes")
    assert rpm(abs, [-4], spinner=False) == [4]


def test_events_stream_snapshots(api):
    import socket

    host, port = api.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.token}\r\n\r\n".encode())
        data = b""
        while data.count(b"data: ") < 2:
            data += s.recv(65536)
    event = data.split(b"data: ", 1)[1].split(b"\n\n", 1)[0]
    snapshot = json.loads(event)
    assert {"cluster", "jobs"} <= set(snapshot)
