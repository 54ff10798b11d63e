"""The gce provider with the real google-cloud-compute client against a local
fake Compute Engine (tests/gce/fake_compute.py) whose "VMs" are local processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import psutil
import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import ROOT, wait_until
from .fake_compute import FakeCompute

PROJECT = "burla-test-1"


@pytest.fixture
def fake(tmp_path):
    os.environ["FAKE_GCE_LOGS"] = str(tmp_path)
    f = FakeCompute()
    yield f
    f.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1] if s.getsockname()[1] < 65000 else _free_port()


def write_spec(tmp_path, fake, name="g1", nodes=2, zones=("us-central1-a",), placement="local", extra="",
               allow_from="[127.0.0.1/32]"):
    port = _free_port()
    allow = f", allow_from: {allow_from}" if placement == "vm" and allow_from else ""
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"provider: {{type: gce, project: {PROJECT}, zones: [{', '.join(zones)}], api_endpoint: '{fake.endpoint}'}}\n"
        f"nodes: {nodes}\nworkers_per_node: 1\nmachine_type: e2-standard-2\n"
        f"head: {{placement: {placement}, advertise: 127.0.0.1, port: {port}{allow}}}\n{extra}")
    return spec


def cli(tmp_path, *args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "burla", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def record(tmp_path, name):
    return json.loads((tmp_path / "cfg" / "clusters" / f"{name}.json").read_text())


def instances(fake, name=None):
    return sorted(k[2] for k, v in fake.instances.items() if name is None or v["labels"].get("burla-cluster") == name)


@pytest.fixture
def cluster_down(tmp_path, fake):
    names: list[str] = []
    yield names
    burla.shutdown()
    for name in names:
        cli(tmp_path, "down", name)


def nested_sum(x):
    from burla import remote_parallel_map

    return sum(remote_parallel_map(abs, [x, -x, x], spinner=False))


def test_up_runs_a_job_then_down_leaves_nothing(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, zones=("us-central1-a", "us-central1-b"))
    fake.exhausted_zones.add("us-central1-a")  # zone fallback
    cluster_down.append("g1")
    up = cli(tmp_path, "up", str(spec))
    assert up.returncode == 0, up.stderr + up.stdout
    assert instances(fake) == ["burla-g1-node-1", "burla-g1-node-2"]
    assert all(k[1] == "us-central1-b" for k in fake.instances)
    rec = record(tmp_path, "g1")
    assert rec["token"] not in json.dumps(next(iter(fake.instances.values()))["metadata"]["items"][0])  # not in the script
    burla.connect(rec["head"], rec["token"], ca=rec["ca"])
    assert rpm(abs, range(-20, 0), spinner=False) == list(range(20, 0, -1))
    assert rpm(nested_sum, range(4), spinner=False) == [3 * x for x in range(4)]  # nested calls, on the VMs
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert [r["name"] for r in status["resources"] if r["role"] == "node"] == ["burla-g1-node-1", "burla-g1-node-2"]
    assert {r["state"] for r in status["resources"]} == {"RUNNING"}
    down = cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert instances(fake) == [] and not fake.procs
    assert not psutil.pid_exists(rec["pids"][0]) or psutil.Process(rec["pids"][0]).status() == psutil.STATUS_ZOMBIE


def test_head_vm_admits_its_nodes_and_allow_from_over_tls_only(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g2", nodes=1, placement="vm", allow_from="[127.0.0.1/32, 10.8.0.0/16]",
                      extra="")
    given = fake.add_service_account(PROJECT, "ops-head")  # one an administrator made: used as it is
    spec.write_text(spec.read_text().replace("port:", f"service_account: {given}, port:"))
    cluster_down.append("g2")
    up = cli(tmp_path, "up", str(spec))
    assert up.returncode == 0, up.stderr
    assert instances(fake) == ["burla-g2-head", "burla-g2-node-1"]
    port = rec_port(tmp_path, "g2")
    nodes = fake.firewalls[(PROJECT, "burla-g2-head")]
    assert nodes["sourceTags"] == ["burla-g2-node"] and nodes["targetTags"] == ["burla-g2-head"]
    assert nodes["allowed"] == [{"IPProtocol": "tcp", "ports": [str(port)]}]
    clients = fake.firewalls[(PROJECT, "burla-g2-clients")]  # the client's two ports, from allow_from only
    assert clients["sourceRanges"] == ["127.0.0.1/32", "10.8.0.0/16"] and clients["targetTags"] == ["burla-g2-head"]
    assert clients["allowed"] == [{"IPProtocol": "tcp", "ports": [str(port), str(port + 1)]}]
    assert "sourceTags" not in clients
    head = fake.instances[(PROJECT, "us-central1-a", "burla-g2-head")]
    assert [sa["email"] for sa in head["serviceAccounts"]] == [given]
    assert not any("/iam/" in path or "/crm/" in path for _, path in fake.requests)
    assert "serviceAccounts" not in fake.instances[(PROJECT, "us-central1-a", "burla-g2-node-1")]
    rec = record(tmp_path, "g2")
    assert rec["http"].startswith("https://") and rec["ca"].startswith("-----BEGIN CERTIFICATE-----")
    burla.connect(rec["head"], rec["token"])  # no CA: the head speaks TLS only
    with pytest.raises(burla.ClusterUnreachable, match="speaks TLS only: connect with its CA"):
        rpm(abs, [-3], spinner=False)
    burla.connect(rec["head"], rec["token"], ca=rec["ca"])
    assert rpm(abs, [-3], spinner=False) == [3]
    status = cli(tmp_path, "status", "g2")  # the JSON API over HTTPS, trusted through the CA
    assert status.returncode == 0 and "1 node(s)" in status.stdout and "TLS" in status.stdout, status.stderr
    assert cli(tmp_path, "status", "g2", "--ca").stdout == rec["ca"]
    assert cli(tmp_path, "down", "g2").returncode == 0
    assert instances(fake) == [] and fake.firewalls == {}


@pytest.fixture
def public_ip():
    """A local "what is my IP" service (the real ones are on the internet)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"203.0.113.7\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_allow_from_defaults_to_this_machines_public_address(tmp_path, fake, cluster_down, public_ip, monkeypatch):
    fake.boot = False
    monkeypatch.setenv("BURLA_PUBLIC_IP_URL", public_ip)
    spec = write_spec(tmp_path, fake, name="g10", nodes=1, placement="vm", allow_from="")
    cluster_down.append("g10")
    cli(tmp_path, "up", str(spec), "--timeout", "1")  # (no node registers: it tears down, having made the rule)
    made = [body for body in fake.inserted if body["name"] == "burla-g10-clients"]
    assert made and made[0]["sourceRanges"] == ["203.0.113.7/32"]


def test_without_allow_from_or_a_public_address_up_asks_for_it_before_creating_anything(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("BURLA_PUBLIC_IP_URL", "http://127.0.0.1:9/")  # nothing answers
    out = cli(tmp_path, "up", str(write_spec(tmp_path, fake, name="g11", nodes=1, placement="vm", allow_from="")))
    assert out.returncode == 1 and "set head.allow_from in cluster.yaml" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not any(m == "POST" for m, _ in fake.requests)


# --- a head that can do its job (issue 14, item 3) ------------------------------------------------


def test_head_vm_runs_as_a_made_account_holding_only_what_its_reaper_needs(tmp_path, fake, cluster_down):
    from burla.cloud.gce._iam import HEAD_PERMISSIONS

    fake.account_lag = 2  # Compute Engine does not see a just-made account for a while
    spec = write_spec(tmp_path, fake, name="g12", nodes=1, placement="vm", extra="idle_timeout_s: 2\n"
                      "reap_after_s: 1\n")
    cluster_down.append("g12")
    up = cli(tmp_path, "up", str(spec))
    assert up.returncode == 0, up.stderr
    email = f"burla-head@{PROJECT}.iam.gserviceaccount.com"
    head = fake.instances[(PROJECT, "us-central1-a", "burla-g12-head")]
    assert head["serviceAccounts"] == [{"email": email, "scopes": ["https://www.googleapis.com/auth/compute"]}]
    role = fake.roles[f"projects/{PROJECT}/roles/burlaHead"]
    assert sorted(role["includedPermissions"]) == sorted(HEAD_PERMISSIONS)
    assert fake.bound(PROJECT, f"projects/{PROJECT}/roles/burlaHead") == [f"serviceAccount:{email}"]
    assert [r for r in fake.policies[PROJECT]["bindings"] if r["role"].startswith("roles/")] == []
    assert record(tmp_path, "g12")["extra"]["head_service_account"] == email
    node = (PROJECT, "us-central1-a", "burla-g12-node-1")
    assert "serviceAccounts" not in fake.instances[node]
    # The idle node shuts itself down; the head, through that account, deletes its VM (disk and all).
    wait_until(lambda: node not in fake.instances, 30, "the head to delete the node VM that stopped itself")
    assert fake.deleted[node[2]] == "TERMINATED"
    assert cli(tmp_path, "down", "g12").returncode == 0
    assert email in fake.service_accounts  # kept for the project's next cluster (it costs nothing)


def test_making_the_head_account_again_changes_nothing_and_mends_a_drifted_role(fake):
    from burla.cloud.gce._iam import HEAD_PERMISSIONS, Iam

    iam = Iam(PROJECT, fake.endpoint)
    email, made = iam.ensure_head_account()
    assert made
    etag = fake.policies[PROJECT]["etag"]
    assert iam.ensure_head_account() == (email, False) and fake.policies[PROJECT]["etag"] == etag
    fake.roles[f"projects/{PROJECT}/roles/burlaHead"]["includedPermissions"] = ["compute.instances.list"]
    fake.policies[PROJECT]["bindings"] = [{"role": "roles/viewer", "members": ["user:a@example.com"]}]
    assert iam.ensure_head_account() == (email, False)
    assert sorted(fake.roles[f"projects/{PROJECT}/roles/burlaHead"]["includedPermissions"]) == sorted(HEAD_PERMISSIONS)
    assert fake.bound(PROJECT, "roles/viewer") == ["user:a@example.com"]  # others' bindings are kept
    assert fake.bound(PROJECT, f"projects/{PROJECT}/roles/burlaHead") == [f"serviceAccount:{email}"]


def test_without_rights_to_make_the_head_account_up_says_which_before_creating_anything(tmp_path, fake):
    fake.iam_forbidden.add(PROJECT)
    out = cli(tmp_path, "up", str(write_spec(tmp_path, fake, name="g13", nodes=1, placement="vm")))
    assert out.returncode == 1 and "permission denied in project burla-test-1" in out.stderr, out.stderr
    assert "roles/iam.serviceAccountAdmin" in out.stderr and "head.service_account" in out.stderr
    assert "Traceback" not in out.stderr
    assert fake.inserted == []


def test_head_sweeps_away_node_vms_that_are_stopped_even_ones_that_never_joined(fake):
    import asyncio

    from burla.cloud.gce._reaper import Reaper

    def vm(name, role, status):
        fake.instances[(PROJECT, "us-central1-a", name)] = {
            "name": name, "status": status, "labels": {"burla-cluster": name.split("-")[1], "burla-role": role}}

    vm("burla-g14-head", "head", "RUNNING")
    vm("burla-g14-node-1", "node", "TERMINATED")  # shut itself down, or preempted
    vm("burla-g14-node-2", "node", "RUNNING")
    vm("burla-g14-node-3", "node", "STOPPED")
    vm("burla-g15-node-1", "node", "TERMINATED")  # another cluster's
    reaper = Reaper({"project": PROJECT, "zones": ["us-central1-a"], "api_endpoint": fake.endpoint, "cluster": "g14"})
    assert asyncio.run(reaper.sweep()) == 2
    assert instances(fake) == ["burla-g14-head", "burla-g14-node-2", "burla-g15-node-1"]


def rec_port(tmp_path, name) -> int:
    return int(record(tmp_path, name)["head"].rsplit(":", 1)[1])


def test_idle_nodes_shut_themselves_down_and_their_vms_are_deleted(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g3", nodes=1, extra="idle_timeout_s: 2\nreap_after_s: 1\n")
    cluster_down.append("g3")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    key = (PROJECT, "us-central1-a", "burla-g3-node-1")
    wait_until(lambda: key not in fake.instances, 30, "the idle node VM to stop itself and be deleted")
    assert fake.deleted[key[2]] == "TERMINATED"


def slow(x):
    import time

    time.sleep(0.1)
    return x


def test_vanished_node_vm_inputs_rerun_elsewhere(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g4", nodes=2)
    cluster_down.append("g4")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    rec = record(tmp_path, "g4")
    burla.connect(rec["head"], rec["token"], ca=rec["ca"])
    gen = rpm(slow, range(60), generator=True, spinner=False)
    got = [next(gen)]
    fake.vanish(PROJECT, "us-central1-a", "burla-g4-node-2")
    got += list(gen)
    assert sorted(got) == list(range(60))


def test_preempted_spot_nodes_inputs_rerun_elsewhere_exactly_once_and_their_vms_go(tmp_path, fake, cluster_down):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    spec = write_spec(tmp_path, fake, name="g6", nodes=3, extra="spot: true\nreap_after_s: 1\n")
    cluster_down.append("g6")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    key = {n: (PROJECT, "us-central1-a", f"burla-g6-node-{n}") for n in (1, 2, 3)}
    assert fake.instances[key[2]]["scheduling"] == {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
    fake.instances[key[3]]["scheduling"]["instanceTerminationAction"] = "STOP"  # as a VM made by another tool
    rec = record(tmp_path, "g6")
    burla.connect(rec["head"], rec["token"], ca=rec["ca"])
    gen = rpm(slow, range(90), generator=True, spinner=False)
    got = [next(gen)]
    try:
        fake.preempt(*key[2], grace_s=5)
        got += [next(gen) for _ in range(10)]
        fake.preempt(*key[3], grace_s=5)
        got += list(gen)
    except BaseException:  # a hang (pytest-timeout) or an error: show what the daemons said
        for log in sorted(tmp_path.glob("fake-gce-*.log")) + sorted((tmp_path / "cfg").rglob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    assert sorted(got) == list(range(90))  # every input once: none lost with the nodes, none twice
    # the node's own shutdown (DELETE) or the head's sweep (STOP) leaves no VM behind
    wait_until(lambda: key[2] not in fake.instances and key[3] not in fake.instances, 30, "the preempted VMs gone")
    assert fake.deleted[key[2][2]] == "PREEMPTED" and fake.deleted[key[3][2]] == "TERMINATED"
    assert key[1] in fake.instances
    ops = compute_v1.ZoneOperationsClient(credentials=AnonymousCredentials(), client_options=ClientOptions(
        api_endpoint=fake.endpoint), transport="rest").list(request=compute_v1.ListZoneOperationsRequest(
        project=PROJECT, zone="us-central1-a", filter='operationType="compute.instances.preempted"'))
    assert sorted((op.target_link, op.status_message) for op in ops) == [
        (key[n][2], "Instance was preempted.") for n in (2, 3)]


def test_head_deletes_a_node_that_stops_heartbeating(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g5", nodes=2, extra="reap_after_s: 1\n")
    cluster_down.append("g5")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    key = (PROJECT, "us-central1-a", "burla-g5-node-1")
    fake.freeze(*key)  # hung VM: RUNNING but silent
    wait_until(lambda: key not in fake.instances, 30, "the head to delete the silent node's VM")
    assert (PROJECT, "us-central1-a", "burla-g5-node-2") in fake.instances


@pytest.mark.parametrize("text, message", [
    ("provider: {type: gce, project: burla-test-1, zone: us-central1-a, zonez: x}\n", "provider.zonez: unknown key"),
    ("provider: {type: gce, project: burla-test-1, zones: [us-central1-a, 7]}\n", "provider.zones[1]: expected str"),
    ("provider: {type: gce, project: burla-test-1, zones: [us-central1-a, moon]}\n",
     "provider.zones[1]: not a valid value; write e.g. zones: [us-central1-a"),
    ("provider: {type: gce, project: burla-test-1, zone: us-central1-a}\nnodes: 0\n", "nodes: expected int >= 1"),
    ("provider: {type: gce, project: burla-test-1, zone: us-central1-a}\ndisk_gb: big\n", "disk_gb: expected int"),
    ("provider: {type: gce, project: burla-test-1}\n", "provider.zones: missing"),
    ("provider: {type: gce, project: burla-test-1, zone: us-central1-a}\nhead: {placement: moon}\n", "head.placement"),
    ("provider: {type: gce, zone: us-central1-a}\n", "provider.project: missing"),
    ("provider: {type: gce, project: burla-test-1, zone: us-central1-a}\nspot: maybe\n", "spot: expected bool, got str"),
])
def test_bad_gce_yaml_is_reported_before_any_api_call(tmp_path, fake, text, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\n" + text)
    out = cli(tmp_path, "up", str(spec))
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert fake.requests == []


def test_permission_and_quota_errors_are_one_clear_message(tmp_path, fake):
    fake.forbidden_projects.add(PROJECT)
    out = cli(tmp_path, "up", str(write_spec(tmp_path, fake, name="g6")))
    assert out.returncode == 1 and "permission denied in project burla-test-1" in out.stderr
    assert "roles/compute.instanceAdmin.v1" in out.stderr and "Traceback" not in out.stderr
    fake.forbidden_projects.clear()
    fake.quota_projects.add(PROJECT)
    out = cli(tmp_path, "up", str(write_spec(tmp_path, fake, name="g7")))
    assert out.returncode == 1 and "quota exceeded" in out.stderr and "Traceback" not in out.stderr
    assert instances(fake) == []


def test_every_zone_exhausted(tmp_path, fake):
    fake.exhausted_zones.update({"us-central1-a", "us-central1-b"})
    out = cli(tmp_path, "up", str(write_spec(tmp_path, fake, name="g8", zones=("us-central1-a", "us-central1-b"))))
    assert out.returncode == 1 and "every zone is out of capacity" in out.stderr


def test_node_vms_carry_the_clients_own_wheel(tmp_path, fake, cluster_down):
    import base64
    import io
    import lzma
    import zipfile

    spec = write_spec(tmp_path, fake, name="g9", nodes=1)
    cluster_down.append("g9")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    inst = fake.instances[(PROJECT, "us-central1-a", "burla-g9-node-1")]
    items = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
    assert items["burla-wheel-name"] == f"burla-{burla.__version__}-py3-none-any.whl"
    parts = [items[f"burla-wheel-{i}"] for i in range(int(items["burla-wheel-parts"]))]
    names = zipfile.ZipFile(io.BytesIO(lzma.decompress(base64.b64decode("".join(parts))))).namelist()
    assert "burla/runtime/_node.py" in names and "burla/scheduler/static/app.js" in names
    assert all(len(p) <= 192 * 1024 for p in parts)  # GCE's limit per metadata value is 256 KB: keep room
    assert sum(len(k) + len(v) for k, v in items.items()) < 400 * 1024  # ... and 512 KB per instance
    assert "python3 -c" in items["startup-script"] and "lzma.decompress" in items["startup-script"]
    assert items["burla-token"] not in items["startup-script"]
    assert 'md "burla-wheel-$i"; done | base64 -d' in items["startup-script"]
    assert items["burla-ca"].startswith("-----BEGIN CERTIFICATE-----")  # nodes trust the cluster's CA only
    assert not any("PRIVATE KEY" in v for v in items.values())  # the head's key is the head's alone
    assert "serviceAccounts" not in inst  # nodes have no Google API rights
    # Its daemon installs each job's missing distributions (its workers are processes of its venv).
    assert "--environments /var/lib/burla/environments" in items["startup-script"]


# --- supervised daemons (issue 14, item 4) ---------------------------------------------------------


@pytest.mark.parametrize("role", ["node", "head"])
def test_startup_scripts_install_once_and_run_the_daemon_as_a_restarting_systemd_unit(role):
    from burla.cloud.gce._startup import head_script, node_script

    script = node_script("g16", "10.0.0.2:7000", 4, 600) if role == "node" else head_script("g16", 7000)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    unit = script.split("<<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0]
    service = dict(line.split("=", 1) for line in unit.split("[Service]\n", 1)[1].splitlines() if "=" in line)
    assert service["Restart"] == "on-failure" and int(service["LimitNOFILE"]) >= 1 << 20
    assert service["EnvironmentFile"] == "/run/burla/env"
    assert service["ExecStart"].startswith(f"/opt/burla/bin/burla {role} ")
    assert f"systemctl restart burla-{role}.service" in script
    assert f'!= "{burla.__version__}" ]; then' in script and f'echo "{burla.__version__}" > /opt/burla/.installed' in script
    assert "PRIVATE KEY" not in script and "TOKEN=\"$(md burla-token)\"" in script  # secrets come from metadata
    if role == "node":
        assert "%H" in service["ExecStart"] and "--tls-ca /run/burla/ca.pem" in service["ExecStart"]
        assert service["RestartPreventExitStatus"] == "3" and "systemctl --no-block poweroff" in service["ExecStopPost"]
        assert "OnFailure=poweroff.target" in unit and "FailureAction" not in unit
    else:
        assert "--tls-cert /run/burla/head.crt --tls-key /run/burla/head.key" in service["ExecStart"]
        assert "--reap-gce /run/burla/gce.json" in service["ExecStart"] and "poweroff" not in unit


def test_worker_image_on_gce_is_refused_with_what_to_do_instead(tmp_path, fake):
    out = cli(tmp_path, "up", str(write_spec(tmp_path, fake, name="g17", extra="worker_image: python:3.11\n")))
    assert out.returncode == 2 and "worker_image: unknown key; not on gce" in out.stderr and "provider: {type: docker}" in out.stderr
    assert fake.requests == []


# --- no leak, ever (issue 14, item 1) -------------------------------------------------------------


def up_process(tmp_path, spec):
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "burla", "up", str(spec)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def up_waiting_for_nodes(tmp_path, fake, cluster_down, name):
    """``burla up`` of a head VM and 2 node VMs that never register: it waits (up to 600 s).
    Returns it and its spec once the 3 VMs exist; the caller ends it."""
    fake.boot = False
    spec = write_spec(tmp_path, fake, name=name, nodes=2, placement="vm")
    cluster_down.append(name)
    up = up_process(tmp_path, spec)
    try:
        wait_until(lambda: len(instances(fake, name)) == 3 and fake.firewalls, 60, "the head and node VMs")
    except BaseException:
        up.kill()
        up.communicate()
        raise
    return up, spec


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_up_while_it_waits_for_nodes_deletes_everything_it_created(tmp_path, fake, cluster_down, sig):
    up, _ = up_waiting_for_nodes(tmp_path, fake, cluster_down, "g20")
    try:
        assert (tmp_path / "cfg" / "clusters" / "g20.pending.json").exists()  # recorded before creating
        up.send_signal(sig)
        _, err = up.communicate(timeout=60)
    finally:
        up.kill()
    assert up.returncode == 130, err
    assert err.strip() == "burla up: interrupted; deleted everything it had created of cluster 'g20'"
    assert instances(fake) == [] and not fake.firewalls
    assert not (tmp_path / "cfg" / "clusters").exists() or not list((tmp_path / "cfg" / "clusters").iterdir())


def test_ctrl_c_while_creates_are_in_flight_leaves_no_vm_behind(tmp_path, fake, cluster_down):
    fake.insert_gate = threading.Event()  # every insert hangs in the API until the gate opens
    spec = write_spec(tmp_path, fake, name="g21", nodes=3)
    cluster_down.append("g21")
    up = up_process(tmp_path, spec)
    try:
        wait_until(lambda: fake.inserts_held == 3, 60, "three inserts in flight")
        up.send_signal(signal.SIGINT)
        fake.insert_gate.set()  # they land now, after `up` was told to stop
        _, err = up.communicate(timeout=60)
    finally:
        up.kill()
        fake.insert_gate.set()
    assert up.returncode == 130, err
    assert "Traceback" not in err and "interrupted; deleted everything it had created of cluster 'g21'" in err
    assert instances(fake) == []


@pytest.mark.parametrize("how", ["name", "yaml"])
def test_down_finds_the_vms_of_an_up_that_was_killed(tmp_path, fake, cluster_down, how):
    up, spec = up_waiting_for_nodes(tmp_path, fake, cluster_down, "g22")
    up.kill()  # SIGKILL: no clean-up of its own
    up.communicate()
    if how == "yaml":  # not even the placeholder record: the spec says where to look
        (tmp_path / "cfg" / "clusters" / "g22.pending.json").unlink()
    down = cli(tmp_path, "down", "g22" if how == "name" else str(spec))
    assert down.returncode == 0, down.stderr
    assert "cluster 'g22' is down (5 thing(s) removed)" in down.stdout  # 3 VMs, 2 firewall rules
    assert instances(fake) == [] and not fake.firewalls


def test_status_shows_vms_that_exist_but_never_registered_with_their_age_and_cost(tmp_path, fake, cluster_down):
    up, _ = up_waiting_for_nodes(tmp_path, fake, cluster_down, "g23")
    try:
        shown = cli(tmp_path, "status", "g23")
        listed = json.loads(cli(tmp_path, "status", "g23", "--json").stdout)
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
    assert shown.returncode == 1 and "has not recorded its head yet" in shown.stderr
    nodes = [line for line in shown.stdout.splitlines() if " node burla-g23-node-" in line]
    assert len(nodes) == 2, shown.stdout
    for line in nodes:
        assert re.search(r": RUNNING \(up \d+s, ~\$0\.067/h, not registered\)$", line), line
    assert "running VMs: ~$0.15/hour" in shown.stdout  # two e2-standard-2 nodes + the e2-small head
    assert {r["registered"] for r in listed["resources"] if r["role"] == "node"} == {False}
    assert instances(fake) == []
