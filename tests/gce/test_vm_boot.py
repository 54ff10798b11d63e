"""The GCE boot path for real (issue 14, item 5): the head and node startup
scripts, unchanged, run by systemd in Debian 12 containers that play the VMs
(tests/gce/vms.py), each asking a metadata-server emulator for its own token,
wheel and script; the fake Compute Engine API creates a container per inserted
instance and removes it on delete.  apt and PyPI are reached as this machine
reaches them (its Debian mirror; PyPI through its CA bundle)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import wait_until
from .fake_compute import FakeCompute
from .test_gce import PROJECT, cli, record, up_process

pytestmark = pytest.mark.skipif(
    not os.environ.get("BURLA_REQUIRE_DOCKER") and (shutil.which("docker") is None or subprocess.run(
        ["docker", "info"], capture_output=True).returncode != 0), reason="needs a Docker engine")


@pytest.fixture(scope="module")
def vm_image():
    from .vms import build_image

    return build_image()


@pytest.fixture
def vms(vm_image):
    from .vms import VmHost

    host = VmHost(vm_image)
    yield host
    host.close()


@pytest.fixture
def fake(tmp_path, vms):
    os.environ["FAKE_GCE_LOGS"] = str(tmp_path)
    f = FakeCompute(host=vms.gateway, vms=vms)
    yield f
    f.close()


def square(x):
    return x * x


def slow(x):
    import time

    time.sleep(0.2)
    return x


def restarts(vms, vm, role) -> tuple[int, str]:
    out = vms.sh(vm, f"systemctl show -p NRestarts -p ActiveState burla-{role}")[1]
    props = dict(line.split("=", 1) for line in out.split())
    return int(props["NRestarts"]), props["ActiveState"]


def write_spec(tmp_path, fake, vms, name):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"provider: {{type: gce, project: {PROJECT}, zones: [us-central1-a], api_endpoint: '{fake.endpoint}'}}\n"
        "nodes: 2\nworkers_per_node: 1\nmachine_type: e2-standard-2\nspot: true\nidle_timeout_s: 30\nreap_after_s: 20\n"
        f"head: {{placement: vm, port: 7200, allow_from: [{vms.gateway}/32]}}\n")
    return spec


def leftovers(vms) -> list[str]:
    return [c.name for c in vms.docker.containers.list(all=True, filters={"label": f"burla-test-gce-vm={vms.name}"})]


def test_ctrl_c_while_the_vms_boot_deletes_them(tmp_path, fake, vms):
    up = up_process(tmp_path, write_spec(tmp_path, fake, vms, "v2"))
    try:
        wait_until(lambda: len(vms.containers) == 3, 60, "the head and node VMs to be booting")
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=120)
    finally:
        up.kill()
        up.communicate()
    assert up.returncode == 130 and err.strip() == "burla up: interrupted; deleted everything it had created of cluster 'v2'"
    assert fake.instances == {} and fake.firewalls == {} and vms.containers == {} and leftovers(vms) == []


def node_count(tmp_path, name) -> int:
    out = cli(tmp_path, "status", name).stdout
    m = re.search(r"(\d+) node\(s\)", out)
    return int(m[1]) if m else -1


@pytest.mark.timeout(480)
def test_startup_scripts_boot_debian_vms_into_a_cluster_that_runs_a_job(tmp_path, fake, vms):
    from .vms import describe

    name = "v1"
    spec = write_spec(tmp_path, fake, vms, name)
    head, nodes = f"burla-{name}-head", [f"burla-{name}-node-{i}" for i in (1, 2)]
    try:
        began = time.monotonic()
        up = cli(tmp_path, "up", str(spec), timeout=900)
        booted_s = time.monotonic() - began
        assert up.returncode == 0, up.stderr + describe(vms)
        print(f"\nboot: burla up, from the first instance insert to both nodes registered: {booted_s:.0f} s")
        for vm in (head, *nodes):
            log = vms.sh(vm, "cat /var/log/startup-script.log")[1]
            start, end = (float(x) for x in re.findall(r"startup-script: (?:start|exit status 0) (\S+)", log))
            print(f"boot: {vm} startup script (apt, venv, wheel and its dependencies from PyPI) {end - start:.0f} s")
        rec = record(tmp_path, name)
        burla.connect(rec["head"], rec["token"], ca=rec["ca"])
        assert rpm(square, range(40), spinner=False) == [x * x for x in range(40)]

        # The daemons run as systemd units with a raised file limit: 1048576 asked; here the
        # container's ceiling (Docker's own limit) caps it, still far above systemd's default 1024.
        for vm, role in ((head, "head"), (nodes[0], "node")):
            assert vms.sh(vm, f"systemctl show -p LimitNOFILE --value burla-{role}")[1].strip() == "1048576"
            ceiling = int(vms.sh(vm, "ulimit -Hn")[1])
            _, limits = vms.sh(vm, f"cat /proc/$(systemctl show -p MainPID --value burla-{role})/limits")
            assert re.search(rf"Max open files\s+{min(ceiling, 1 << 20)}\s+{min(ceiling, 1 << 20)}", limits), limits

        # A crashed daemon is restarted by systemd; the nodes find the restarted head again.
        for vm, role in ((nodes[0], "node"), (head, "head")):
            t = time.monotonic()
            assert vms.sh(vm, f"kill -9 $(systemctl show -p MainPID --value burla-{role})")[0] == 0
            wait_until(lambda: restarts(vms, vm, role) == (1, "active"), 30, f"systemd to restart burla-{role}")
            wait_until(lambda: node_count(tmp_path, name) == 2, 60, f"both nodes registered after burla-{role} restarted")
            print(f"boot: burla-{role} killed -9 to both nodes registered again: {time.monotonic() - t:.1f} s")
        assert rpm(square, range(20), spinner=False) == [x * x for x in range(20)]

        # A reboot resumes: the startup script runs again, installs nothing, and the node rejoins.
        t = time.monotonic()
        vms.reboot(nodes[0])
        wait_until(lambda: vms.sh(nodes[0], "cat /var/log/startup-script.log")[1].count("startup-script: exit") == 2,
                   60, "the startup script to run again at boot")
        log = vms.sh(nodes[0], "cat /var/log/startup-script.log")[1]
        assert log.count("burla: installing") == 1 and log.count("startup-script: exit status 0") == 2, log
        wait_until(lambda: node_count(tmp_path, name) == 2, 60, "the rebooted node to register again")
        print(f"boot: node rebooted to registered again: {time.monotonic() - t:.1f} s")

        # A preempted spot node: its inputs rerun on the other one, each result once; GCE deletes the VM.
        gen = rpm(slow, range(40), generator=True, spinner=False)
        got = [next(gen)]
        fake.preempt(PROJECT, "us-central1-a", nodes[1], grace_s=10)
        got += list(gen)
        assert sorted(got) == list(range(40))
        assert fake.deleted[nodes[1]] == "PREEMPTED" and nodes[1] not in vms.containers

        # An idle node powers its VM off (systemd's ExecStopPost); the head's sweep deletes it.
        t = time.monotonic()
        wait_until(lambda: nodes[0] in fake.deleted, 30 + 20 + 30, "the idle node to power off and be deleted")
        print(f"boot: last job done to the idle node's VM deleted: {time.monotonic() - t:.1f} s (idle_timeout_s 30)")
        assert fake.deleted[nodes[0]] == "TERMINATED" and nodes[0] not in vms.containers

    except BaseException:
        print(describe(vms))
        raise
    finally:
        burla.shutdown()
        down = cli(tmp_path, "down", name, timeout=300)
    assert down.returncode == 0, down.stderr
    assert vms.containers == {} and leftovers(vms) == []
    assert fake.instances == {} and fake.firewalls == {}

