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


def write_spec(tmp_path, fake, name="g1", nodes=2, zones=("us-central1-a",), placement="local", extra=""):
    port = _free_port()
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"provider: {{type: gce, project: {PROJECT}, zones: [{', '.join(zones)}], api_endpoint: '{fake.endpoint}'}}\n"
        f"nodes: {nodes}\nworkers_per_node: 1\nmachine_type: e2-standard-2\n"
        f"head: {{placement: {placement}, advertise: 127.0.0.1, port: {port}}}\n{extra}")
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
    burla.connect(rec["head"], rec["token"])
    assert rpm(abs, range(-20, 0), spinner=False) == list(range(20, 0, -1))
    assert rpm(nested_sum, range(4), spinner=False) == [3 * x for x in range(4)]  # nested calls, on the VMs
    status = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert [r["name"] for r in status["resources"] if r["role"] == "node"] == ["burla-g1-node-1", "burla-g1-node-2"]
    assert {r["state"] for r in status["resources"]} == {"RUNNING"}
    down = cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert instances(fake) == [] and not fake.procs
    assert not psutil.pid_exists(rec["pids"][0]) or psutil.Process(rec["pids"][0]).status() == psutil.STATUS_ZOMBIE


def test_head_vm_with_firewall_rule(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g2", nodes=1, placement="vm")
    cluster_down.append("g2")
    up = cli(tmp_path, "up", str(spec))
    assert up.returncode == 0, up.stderr
    assert instances(fake) == ["burla-g2-head", "burla-g2-node-1"]
    rule = fake.firewalls[(PROJECT, "burla-g2-head")]
    assert rule["sourceTags"] == ["burla-g2-node"] and rule["targetTags"] == ["burla-g2-head"]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": [str(rec_port(tmp_path, "g2"))]}]
    rec = record(tmp_path, "g2")
    burla.connect(rec["head"], rec["token"])
    assert rpm(abs, [-3], spinner=False) == [3]
    assert cli(tmp_path, "down", "g2").returncode == 0
    assert instances(fake) == [] and fake.firewalls == {}


def rec_port(tmp_path, name) -> int:
    return int(record(tmp_path, name)["head"].rsplit(":", 1)[1])


def test_idle_nodes_shut_themselves_down(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g3", nodes=1, extra="idle_timeout_s: 2\n")
    cluster_down.append("g3")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    key = (PROJECT, "us-central1-a", "burla-g3-node-1")
    wait_until(lambda: fake.instances[key]["status"] == "TERMINATED", 20, "the idle node VM to stop itself")


def slow(x):
    import time

    time.sleep(0.1)
    return x


def test_vanished_node_vm_inputs_rerun_elsewhere(tmp_path, fake, cluster_down):
    spec = write_spec(tmp_path, fake, name="g4", nodes=2)
    cluster_down.append("g4")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    rec = record(tmp_path, "g4")
    burla.connect(rec["head"], rec["token"])
    gen = rpm(slow, range(60), generator=True, spinner=False)
    got = [next(gen)]
    fake.vanish(PROJECT, "us-central1-a", "burla-g4-node-2")
    got += list(gen)
    assert sorted(got) == list(range(60))


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
    import zipfile

    spec = write_spec(tmp_path, fake, name="g9", nodes=1)
    cluster_down.append("g9")
    assert cli(tmp_path, "up", str(spec)).returncode == 0
    inst = fake.instances[(PROJECT, "us-central1-a", "burla-g9-node-1")]
    items = {i["key"]: i["value"] for i in inst["metadata"]["items"]}
    assert items["burla-wheel-name"] == f"burla-{burla.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(io.BytesIO(base64.b64decode(items["burla-wheel"]))).namelist()
    assert "burla/runtime/_node.py" in names and "burla/scheduler/static/app.js" in names
    assert len(items["burla-wheel"]) < 256 * 1024  # GCE's limit per metadata value
    assert items["burla-token"] not in items["startup-script"]
    assert "md burla-wheel | base64 -d" in items["startup-script"]
    # Its daemon installs each job's missing distributions (its workers are processes of its venv).
    assert "--environments /var/lib/burla/environments" in items["startup-script"]


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
    assert "cluster 'g22' is down (4 thing(s) removed)" in down.stdout
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
