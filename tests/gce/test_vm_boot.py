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
import subprocess
import time

import pytest

import burla
from burla import remote_parallel_map as rpm

from .fake_compute import FakeCompute
from .test_gce import PROJECT, cli, record

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


def node_count(tmp_path, name) -> int:
    out = cli(tmp_path, "status", name).stdout
    m = re.search(r"(\d+) node\(s\)", out)
    return int(m[1]) if m else -1


def test_startup_scripts_boot_debian_vms_into_a_cluster_that_runs_a_job(tmp_path, fake, vms):
    from .vms import describe

    name = "v1"
    spec = tmp_path / "v1.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"provider: {{type: gce, project: {PROJECT}, zones: [us-central1-a], api_endpoint: '{fake.endpoint}'}}\n"
        "nodes: 2\nworkers_per_node: 1\nmachine_type: e2-standard-2\nidle_timeout_s: 600\nreap_after_s: 60\n"
        f"head: {{placement: vm, port: 7200, allow_from: [{vms.gateway}/32]}}\n")
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

    except BaseException:
        print(describe(vms))
        raise
    finally:
        burla.shutdown()
        down = cli(tmp_path, "down", name, timeout=300)
    assert down.returncode == 0, down.stderr
    assert vms.containers == {} and not vms.docker.containers.list(
        all=True, filters={"label": f"burla-test-gce-vm={vms.name}"})
    assert fake.instances == {} and fake.firewalls == {}

