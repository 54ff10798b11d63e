"""A fake Compute Engine REST server for the tests (the only fake in the suite:
Google's API cannot exist here).  The real google-cloud-compute client talks
to it over HTTP.

It keeps instances, firewall rules and operations per project, pages lists,
applies ``labels.KEY = "VALUE"`` / ``name = "prefix-*"`` filters, and
answers with Compute Engine's errors: 409 on a duplicate, 404 on a missing
resource, 403 for a project in ``forbidden_projects``, an operation failing
with ZONE_RESOURCE_POOL_EXHAUSTED in an ``exhausted_zones`` zone, and with
QUOTA_EXCEEDED for ``quota_projects``.

"Booting" an instance runs its startup script's systemd unit's ``ExecStart``
as a local process (``/opt/burla/bin/burla`` becomes this Python's ``-m
burla``, ``/run/burla`` a folder of the test's), after writing the files and
the environment the script's ``md KEY > /run/burla/FILE``, ``VAR="$(md KEY)"``
and ``printf 'NAME=%s\n' "$VAR" > /run/burla/env`` lines take from the
instance's metadata.  When that
process exits the instance is TERMINATED, as a VM that powered off.  (The
VM-container tests run the scripts themselves, under systemd.)
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

_IAM_PATH = re.compile(r"^/(?:iam/v1/projects/(?P<project>[^/:]+)/(?P<kind>serviceAccounts|roles)(?:/(?P<name>[^/]+))?"
                       r"|crm/v1/projects/(?P<p2>[^/:]+):(?P<verb>getIamPolicy|setIamPolicy))$")


class FakeCompute:
    def __init__(self, page_size: int = 2, host: str = "127.0.0.1", vms: Any = None):
        self.page_size = page_size
        self.vms = vms  # a vms.VmHost: instances boot as VM containers, not local processes
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}  # (project, zone, name)
        self.firewalls: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.procs: dict[tuple[str, str, str], subprocess.Popen[bytes]] = {}
        self.exhausted_zones: set[str] = set()
        self.forbidden_projects: set[str] = set()
        self.quota_projects: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.inserted: list[dict[str, Any]] = []  # every insert's body, kept after a delete
        self.deleted: dict[str, str] = {}  # instance name -> its status when it was deleted
        self.boot = True  # False: instances run no daemon (VMs that never register)
        self.insert_gate: threading.Event | None = None  # set: instance inserts wait for it (a slow API)
        self.inserts_held = 0  # inserts waiting on the gate now
        self.service_accounts: dict[str, dict[str, Any]] = {}  # email -> account
        self.roles: dict[str, dict[str, Any]] = {}  # projects/P/roles/ID -> role
        self.policies: dict[str, dict[str, Any]] = {}  # project -> IAM policy
        self.iam_forbidden: set[str] = set()  # projects where IAM calls are denied
        self.account_lag = 0  # inserts naming a just-made account that fail as "not found" first
        self._unseen: dict[str, int] = {}  # email -> inserts still to refuse
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self.endpoint = f"http://{host}:{self._server.server_address[1]}"
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
        if not self.boot or not re.search(r"^# burla-(node|head)-start$", script, re.M):
            return
        run = os.path.join(os.environ.get("FAKE_GCE_LOGS", "/tmp"), f"fake-gce-{inst['name']}-run")
        os.makedirs(run, mode=0o700, exist_ok=True)
        for m in re.finditer(r"^md ([\w-]+) > /run/burla/([\w.]+)$", script, re.M):  # secrets, as the script
            with open(os.path.join(run, m[2]), "w") as f:
                f.write(items.get(m[1], ""))
        env = dict(os.environ, PYTHONPATH=ROOT)
        assigned = {m[1]: items.get(m[2], "") for m in re.finditer(r'^([A-Z_]+)="\$\(md ([\w-]+)\)"$', script, re.M)}
        for m in re.finditer(r"^printf '([A-Z_]+)=%s\\n' \"\$([A-Z_]+)\" > /run/burla/env$", script, re.M):
            env[m[1]] = assigned.get(m[2], "")
        start = re.search(r"^ExecStart=/opt/burla/bin/burla (.*)$", script, re.M)
        assert start, "a startup script without its unit's ExecStart"
        argv = [a.replace("/run/burla", run).replace("%H", inst["name"]) for a in shlex.split(start[1])]
        path = os.path.join(os.environ.get("FAKE_GCE_LOGS", "/tmp"), f"fake-gce-{inst['name']}.log")
        with open(path, "ab") as log:
            self.procs[key] = subprocess.Popen([sys.executable, "-m", "burla", *argv], env=env, stdout=log,
                                               stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd="/")

    def _kill(self, key: tuple[str, str, str]) -> None:
        if self.vms is not None:
            self.vms.remove(key[2])
        proc = self.procs.pop(key, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _watch(self) -> None:
        while not self._stop.wait(0.1 if self.vms is None else 0.5):
            if self.vms is not None:
                with self._lock:
                    running = [k for k, v in self.instances.items() if v["status"] == "RUNNING"]
                for key in running:
                    if not self.vms.running(key[2]):  # the VM powered itself off
                        with self._lock:
                            if key in self.instances:
                                self.instances[key]["status"] = "TERMINATED"
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

    def preempt(self, project: str, zone: str, name: str, grace_s: float = 30.0) -> None:
        """Compute Engine reclaims a spot VM: a preemption operation, an ACPI power-off (the
        guest's systemd stops its units; ``grace_s`` later the VM is off, 30 s on GCE), then what
        the instance's ``scheduling.instanceTerminationAction`` says: DELETE removes the
        instance, STOP leaves it TERMINATED."""
        key = (project, zone, name)
        with self._lock:
            inst = self.instances[key]
            scheduling = inst.get("scheduling", {})
            assert scheduling.get("provisioningModel") == "SPOT", f"{name} is not a spot VM: GCE would not preempt it"
            op = self._operation(project, zone, "compute.instances.preempted", name)
            op.update(status="DONE", progress=100, statusMessage="Instance was preempted.",
                      targetLink=inst.get("selfLink", name))
            self.operations[op["name"]] = op
        if self.vms is not None:
            self.vms.power_off(name, grace_s)
        elif (proc := self.procs.get(key)) is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with self._lock:
            if scheduling.get("instanceTerminationAction") == "DELETE":
                self.deleted[name] = "PREEMPTED"
                self.instances.pop(key, None)
                self._kill(key)
            elif key in self.instances:
                self.instances[key]["status"] = "TERMINATED"

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

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

            def _dispatch(self, method: str) -> None:
                url = urlparse(self.path)
                fake.requests.append((method, url.path))
                if m := _IAM_PATH.match(url.path):
                    body = self._body() if method in ("POST", "PATCH") else {}
                    with fake._lock:
                        status, reply = fake._iam(method, m.groupdict(), body)
                    return self._reply(status, reply)
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
        if kind == "operations" and not name:
            return 200, self._list({(o.get("zone", "").rsplit("/", 1)[-1], n): o for n, o in self.operations.items()},
                                   (zone,), query)
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
            gone = store.pop((*scope, name))
            if kind == "instances":
                self.deleted[name] = gone["status"]
                self._kill((project, zone, name))
            return 200, self._operation(project, zone, "delete", name)
        # insert
        self.inserted.append(body)
        key = (*scope, body["name"])
        if key in store:
            return 409, _error(409, f"The resource '{body['name']}' already exists", "alreadyExists")
        if kind == "instances" and (refused := self._account_refused(project, body)):
            return 400, _error(400, refused, "invalid")
        if kind == "instances" and zone in self.exhausted_zones:
            return 200, self._operation(project, zone, "insert", body["name"], "ZONE_RESOURCE_POOL_EXHAUSTED",
                                        f"The zone '{zone}' does not have enough resources available")
        if project in self.quota_projects:
            return 200, self._operation(project, zone, "insert", body["name"], "QUOTA_EXCEEDED",
                                        "Quota 'CPUS' exceeded. Limit: 8.0 in region us-central1.")
        item = dict(body, id=str(next(self._ids)), status="RUNNING" if kind == "instances" else None)
        if kind == "instances":
            address = "127.0.0.1"
            if self.vms is not None and self.boot:  # a VM container, booting its startup script
                address = self.vms.start(body["name"], {i["key"]: i["value"]
                                                        for i in body.get("metadata", {}).get("items", [])})
            item["networkInterfaces"] = [dict(nic, networkIP=address, accessConfigs=[
                dict(ac, natIP=address) for ac in nic.get("accessConfigs", [])]) for nic in body.get("networkInterfaces", [])]
            item["zone"] = f"projects/{project}/zones/{zone}"
            item["creationTimestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        store[key] = item
        if kind == "instances" and self.vms is None:
            self._boot(key, item)  # type: ignore[arg-type]
        return 200, self._operation(project, zone, "insert", body["name"])

    def _account_refused(self, project: str, body: dict[str, Any]) -> str:
        for sa in body.get("serviceAccounts", []):
            email = sa.get("email", "")
            if email not in self.service_accounts or self._unseen.get(email, 0) > 0:
                if email in self._unseen:
                    self._unseen[email] -= 1
                return (f"Invalid value for field 'resource.serviceAccounts[0].email': '{email}'. "
                        f"The resource 'projects/{project}/serviceAccounts/{email}' was not found")
        return ""

    # --- IAM and Resource Manager --------------------------------------------------------

    def add_service_account(self, project: str, account_id: str) -> str:
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        self.service_accounts[email] = {"name": f"projects/{project}/serviceAccounts/{email}", "email": email,
                                        "projectId": project}
        return email

    def _iam(self, method: str, p: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        project, kind, name = p["project"] or p["p2"], p["kind"] or p["verb"], p["name"]
        if project in self.iam_forbidden:
            return 403, _error(403, f"Permission 'iam.{kind}.create' denied on resource 'projects/{project}'",
                               "forbidden")
        if kind == "serviceAccounts":
            if method == "GET":
                sa = self.service_accounts.get(name or "")
                return (200, sa) if sa else (404, _error(404, f"Unknown service account {name}"))
            email = f"{body['accountId']}@{project}.iam.gserviceaccount.com"
            if email in self.service_accounts:
                return 409, _error(409, f"Service account {body['accountId']} already exists", "alreadyExists")
            self._unseen[email] = self.account_lag
            return 200, self.add_service_account(project, body["accountId"])
        if kind == "roles":
            rid = f"projects/{project}/roles/{name or body.get('roleId')}"
            if method == "GET":
                role = self.roles.get(rid)
                return (200, role) if role else (404, _error(404, f"Role {rid} not found"))
            if method == "POST":
                if rid in self.roles:
                    return 409, _error(409, f"Role {rid} already exists", "alreadyExists")
                self.roles[rid] = dict(body["role"], name=rid)
            elif rid not in self.roles:
                return 404, _error(404, f"Role {rid} not found")
            else:
                self.roles[rid] = dict(self.roles[rid], **body, name=rid)
            return 200, self.roles[rid]
        policy = self.policies.setdefault(project, {"version": 1, "etag": "e0", "bindings": []})
        if kind == "getIamPolicy":
            return 200, json.loads(json.dumps(policy))
        new = body["policy"]
        if new.get("etag") != policy["etag"]:
            return 409, _error(409, "There were concurrent policy changes", "aborted")
        for b in new.get("bindings", []):
            if b["role"].startswith("projects/") and b["role"] not in self.roles:
                return 400, _error(400, f"Role {b['role']} does not exist", "badRequest")
        self.policies[project] = dict(new, etag=f"e{int(policy['etag'][1:]) + 1}")
        return 200, self.policies[project]

    def bound(self, project: str, role: str) -> list[str]:
        """The members the project's IAM policy binds to ``role``."""
        bindings = self.policies.get(project, {}).get("bindings", [])
        return [m for b in bindings if b["role"] == role for m in b["members"]]

    def _list(self, store: dict[Any, dict[str, Any]], scope: tuple[str, ...], query: dict[str, list[str]]) -> dict[str, Any]:
        items = [v for k, v in sorted(store.items()) if k[: len(scope)] == scope]
        flt = query.get("filter", [""])[0]
        if m := re.match(r'labels\.([\w-]+)\s*=\s*"?([^"]*)"?', flt):
            items = [i for i in items if i.get("labels", {}).get(m[1]) == m[2]]
        elif m := re.match(r'name\s*=\s*"?([^"*]*)\*?"?', flt):
            items = [i for i in items if i["name"].startswith(m[1])]
        elif m := re.match(r'(\w+)\s*=\s*"?([^"]*)"?', flt):
            items = [i for i in items if str(i.get(m[1])) == m[2]]
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
