"""A fake Compute Engine REST server for the tests (the only fake in the suite:
Google's API cannot exist here).  The real google-cloud-compute client talks
to it over HTTP.

It keeps instances, firewall rules and operations per project, pages lists,
applies ``labels.KEY = "VALUE"`` / ``name = "prefix-*"`` filters, and
answers with Compute Engine's errors: 409 on a duplicate, 404 on a missing
resource, 403 for a project in ``forbidden_projects``, an operation failing
with ZONE_RESOURCE_POOL_EXHAUSTED in an ``exhausted_zones`` zone, and with
QUOTA_EXCEEDED for ``quota_projects``.

"Booting" an instance runs the command on the line after its startup
script's ``# burla-node-start`` / ``# burla-head-start`` marker as a local
process (``/opt/burla/bin/burla`` becomes this Python's ``-m burla``), with
the metadata's token in its environment.  When that process exits the
instance is TERMINATED, as a VM that ran ``shutdown -h now``.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PATH = re.compile(r"^/compute/v1/projects/(?P<project>[^/]+)/(?:zones/(?P<zone>[^/]+)|global)/"
                   r"(?P<kind>instances|firewalls|operations)(?:/(?P<name>[^/]+))?(?:/(?P<verb>wait))?$")


class FakeCompute:
    def __init__(self, page_size: int = 2):
        self.page_size = page_size
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}  # (project, zone, name)
        self.firewalls: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.procs: dict[tuple[str, str, str], subprocess.Popen[bytes]] = {}
        self.exhausted_zones: set[str] = set()
        self.forbidden_projects: set[str] = set()
        self.quota_projects: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.boot = True  # False: instances run no daemon (VMs that never register)
        self.insert_gate: threading.Event | None = None  # set: instance inserts wait for it (a slow API)
        self.inserts_held = 0  # inserts waiting on the gate now
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]
        self._stop = threading.Event()
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for key in list(self.procs):
            self._kill(key)

    # --- "VMs" -------------------------------------------------------------------------

    def _boot(self, key: tuple[str, str, str], inst: dict[str, Any]) -> None:
        items = {i["key"]: i["value"] for i in inst.get("metadata", {}).get("items", [])}
        script = items.get("startup-script", "")
        lines = script.splitlines()
        marker = next((i for i, line in enumerate(lines) if line.strip() in ("# burla-node-start", "# burla-head-start")), None)
        if marker is None or not self.boot:
            return
        argv = shlex.split(lines[marker + 1])
        env = dict(os.environ, PYTHONPATH=ROOT, BURLA_TOKEN=items.get("burla-token", ""),
                   BURLA_GCE=items.get("burla-gce", "{}"))
        while "=" in argv[0]:  # leading VAR=value assignments
            argv.pop(0)
        argv = [a.replace("$(hostname)", inst["name"]) for a in argv[1:]]
        path = os.path.join(os.environ.get("FAKE_GCE_LOGS", "/tmp"), f"fake-gce-{inst['name']}.log")
        with open(path, "ab") as log:
            self.procs[key] = subprocess.Popen([sys.executable, "-m", "burla", *argv], env=env, stdout=log,
                                               stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd="/")

    def _kill(self, key: tuple[str, str, str]) -> None:
        proc = self.procs.pop(key, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for key, proc in list(self.procs.items()):
                    if proc.poll() is not None and key in self.instances:
                        self.instances[key]["status"] = "TERMINATED"  # the VM shut itself down
                        del self.procs[key]

    def vanish(self, project: str, zone: str, name: str) -> None:
        """A VM disappearing under us (preempted, deleted by someone else)."""
        with self._lock:
            self.instances.pop((project, zone, name), None)
            self._kill((project, zone, name))

    def freeze(self, project: str, zone: str, name: str) -> None:
        """The VM hangs: its daemon stops heart-beating but the instance stays RUNNING."""
        proc = self.procs[(project, zone, name)]
        os.killpg(proc.pid, signal.SIGSTOP)

    def process_of(self, project: str, zone: str, name: str) -> subprocess.Popen[bytes] | None:
        return self.procs.get((project, zone, name))

    # --- HTTP ---------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def _dispatch(self, method: str) -> None:
                url = urlparse(self.path)
                fake.requests.append((method, url.path))
                m = _PATH.match(url.path)
                if not m:
                    return self._reply(404, _error(404, f"no route {url.path}"))
                if m["project"] in fake.forbidden_projects:
                    return self._reply(403, _error(403, f"Required 'compute.{m['kind']}.list' permission for "
                                                        f"'projects/{m['project']}'", "forbidden"))
                body = self._body() if method == "POST" else {}
                gate = fake.insert_gate
                if gate is not None and method == "POST" and m["kind"] == "instances" and not m["name"]:
                    with fake._lock:
                        fake.inserts_held += 1
                    gate.wait(60)
                    with fake._lock:
                        fake.inserts_held -= 1
                with fake._lock:
                    status, reply = fake._route(method, m.groupdict(), parse_qs(url.query), body)
                self._reply(status, reply)

        return Handler

    def _route(self, method: str, p: dict[str, Any], query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        project, zone, kind, name = p["project"], p["zone"], p["kind"], p["name"]
        if kind == "operations":  # operations finish when first polled: clients must wait on them
            op = self.operations.get(name)
            if op is None:
                return 404, _error(404, f"operation {name} not found")
            op["status"], op["progress"] = "DONE", 100
            return 200, op
        store: dict[Any, dict[str, Any]] = self.instances if kind == "instances" else self.firewalls  # type: ignore[assignment]
        scope = (project, zone) if kind == "instances" else (project,)
        if method == "GET" and name:
            item = store.get((*scope, name))
            return (200, item) if item else (404, _error(404, f"The resource '{name}' was not found"))
        if method == "GET":
            return 200, self._list(store, scope, query)
        if method == "DELETE":
            if (*scope, name) not in store:
                return 404, _error(404, f"The resource '{name}' was not found")
            del store[(*scope, name)]
            if kind == "instances":
                self._kill((project, zone, name))
            return 200, self._operation(project, zone, "delete", name)
        # insert
        key = (*scope, body["name"])
        if key in store:
            return 409, _error(409, f"The resource '{body['name']}' already exists", "alreadyExists")
        if kind == "instances" and zone in self.exhausted_zones:
            return 200, self._operation(project, zone, "insert", body["name"], "ZONE_RESOURCE_POOL_EXHAUSTED",
                                        f"The zone '{zone}' does not have enough resources available")
        if project in self.quota_projects:
            return 200, self._operation(project, zone, "insert", body["name"], "QUOTA_EXCEEDED",
                                        "Quota 'CPUS' exceeded. Limit: 8.0 in region us-central1.")
        item = dict(body, id=str(next(self._ids)), status="RUNNING" if kind == "instances" else None)
        if kind == "instances":
            item["networkInterfaces"] = [dict(nic, networkIP="127.0.0.1", accessConfigs=[
                dict(ac, natIP="127.0.0.1") for ac in nic.get("accessConfigs", [])]) for nic in body.get("networkInterfaces", [])]
            item["zone"] = f"projects/{project}/zones/{zone}"
            item["creationTimestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        store[key] = item
        if kind == "instances":
            self._boot(key, item)  # type: ignore[arg-type]
        return 200, self._operation(project, zone, "insert", body["name"])

    def _list(self, store: dict[Any, dict[str, Any]], scope: tuple[str, ...], query: dict[str, list[str]]) -> dict[str, Any]:
        items = [v for k, v in sorted(store.items()) if k[: len(scope)] == scope]
        flt = query.get("filter", [""])[0]
        if m := re.match(r'labels\.([\w-]+)\s*=\s*"?([^"]*)"?', flt):
            items = [i for i in items if i.get("labels", {}).get(m[1]) == m[2]]
        elif m := re.match(r'name\s*=\s*"?([^"*]*)\*?"?', flt):
            items = [i for i in items if i["name"].startswith(m[1])]
        start = int(query.get("pageToken", ["0"])[0])
        size = int(query.get("maxResults", [str(self.page_size)])[0])
        page = {"items": items[start : start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return page

    def _operation(self, project: str, zone: str | None, kind: str, target: str, code: str = "", message: str = "") -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        op: dict[str, Any] = {"kind": "compute#operation", "name": name, "operationType": kind, "status": "RUNNING",
                              "targetLink": target, "progress": 0}
        if zone:
            op["zone"] = f"projects/{project}/zones/{zone}"
        if code:
            op["error"] = {"errors": [{"code": code, "message": message}]}
            op["httpErrorStatusCode"] = 503 if "EXHAUSTED" in code else 403
        self.operations[name] = op
        return op


def _error(code: int, message: str, reason: str = "notFound") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "reason": reason}]}}
