"""Debian 12 containers that play Compute Engine VMs, and the metadata server they ask.

The image (built offline with mmdebstrap from this machine's Debian mirror, like
``burla image build``'s base) is what a ``debian-12`` GCE image offers a startup
script: systemd as PID 1, ``python3``, ``curl``, CA certificates, and a
``google-startup-scripts.service`` that, as Google's guest agent does, fetches
the instance's ``startup-script`` from the metadata server at every boot and
runs it as root.  No ``python3-venv``: the script installs it with apt, as on GCE.

Each "VM" is a container on its own Docker network, named and host-named after
the instance, with:
- ``metadata.google.internal`` pointing at a metadata server on the network's
  gateway (port 80), which answers each container, by its address, with its own
  instance's metadata (``Metadata-Flavor: Google`` required, as on GCE);
- this machine's CA bundle, read-only (how anything here reaches apt and PyPI);
- ``/run`` and ``/tmp`` on tmpfs and the root file system kept across restarts:
  ``docker restart`` is a reboot, and ``systemctl poweroff`` inside stops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from burla.cloud.docker._image import debian_mirror

LABEL = "burla-test-gce-vm"
_RUNNER = """#!/bin/bash
# Plays google-guest-agent's startup-script runner: at every boot, fetch this
# instance's startup-script from the metadata server and run it as root.
set -u
url=http://metadata.google.internal/computeMetadata/v1/instance/attributes/startup-script
for _ in $(seq 1 60); do
  curl -fs -H 'Metadata-Flavor: Google' "$url" -o /run/startup-script && break
  sleep 1
done
echo "startup-script: start $(date +%s.%N)" >> /var/log/startup-script.log
bash /run/startup-script >> /var/log/startup-script.log 2>&1
echo "startup-script: exit status $? $(date +%s.%N)" >> /var/log/startup-script.log
"""
_UNIT = """[Unit]
Description=Google Compute Engine Startup Scripts (played by burla's tests)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/bin/google_metadata_script_runner
TimeoutStartSec=0
KillMode=process

[Install]
WantedBy=multi-user.target
"""
_PACKAGES = "systemd,systemd-sysv,curl,ca-certificates,python3,procps"


def image_tag() -> str:
    digest = hashlib.sha256((_RUNNER + _UNIT + _PACKAGES).encode()).hexdigest()[:12]
    return f"burla-test-gce-vm:{digest}"


def build_image() -> str:
    """The VM image, built once (its tag is a digest of what goes into it)."""
    tag = image_tag()
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    tool = shutil.which("mmdebstrap")
    assert tool, "the VM-container tests need mmdebstrap (.ci/run installs it)"
    with tempfile.TemporaryDirectory() as d:
        runner, unit = os.path.join(d, "runner"), os.path.join(d, "unit")
        with open(runner, "w") as f:
            f.write(_RUNNER)
        with open(unit, "w") as f:
            f.write(_UNIT)
        hooks = [
            f'install -m 0755 {runner} "$1/usr/bin/google_metadata_script_runner"',
            f'install -m 0644 {unit} "$1/etc/systemd/system/google-startup-scripts.service"',
            'ln -s /etc/systemd/system/google-startup-scripts.service '
            '"$1/etc/systemd/system/multi-user.target.wants/google-startup-scripts.service"',
            # pip trusts the CA bundle mounted from this machine (how PyPI is reached here)
            'printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n" > "$1/etc/pip.conf"',
        ]
        cmd = [tool, "--variant=minbase", f"--include={_PACKAGES}", "--format=tar",
               *(f"--customize-hook={h}" for h in hooks), "bookworm", "-", debian_mirror()]
        build = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-c", 'CMD ["/sbin/init"]', "-", tag], stdin=build.stdout,
                                  capture_output=True, text=True)
        assert build.stdout is not None
        build.stdout.close()
        _, err = build.communicate()
        assert build.returncode == 0, err.decode(errors="replace")[-800:]
        assert imported.returncode == 0, imported.stderr
    return tag


class VmHost:
    """A Docker network for the VMs, the metadata server on its gateway, and the containers."""

    def __init__(self, image: str):
        import docker

        self.image = image
        self.docker = docker.from_env()
        self.name = f"burla-test-vms-{os.getpid()}-{id(self) % 10000}"
        self.network = self.docker.networks.create(self.name, driver="bridge", labels={LABEL: self.name})
        self.network.reload()
        self.gateway = self.network.attrs["IPAM"]["Config"][0]["Gateway"]
        self.metadata: dict[str, dict[str, str]] = {}  # container address -> instance metadata
        self.containers: dict[str, Any] = {}  # instance name -> container
        self._rebooting: set[str] = set()  # (a container restarting is "exited" for a moment)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((self.gateway, 80), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.name}"}):
            c.remove(force=True)
        self.network.remove()

    def start(self, name: str, items: dict[str, str]) -> str:
        """Boot a VM for instance ``name``; its address."""
        c = self.docker.containers.run(
            self.image, name=f"{self.name}-{name}", hostname=name, detach=True, network=self.name,
            labels={LABEL: self.name}, extra_hosts={"metadata.google.internal": self.gateway},
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
                     "/etc/ssl/certs": {"bind": "/etc/ssl/certs", "mode": "ro"}},
            tmpfs={"/run": "", "/run/lock": "", "/tmp": ""}, stop_signal="SIGRTMIN+3", mem_limit="2g")
        c.reload()
        address = c.attrs["NetworkSettings"]["Networks"][self.name]["IPAddress"]
        with self._lock:
            self.metadata[address] = dict(items, **{"__name__": name})
            self.containers[name] = c
        return str(address)

    def remove(self, name: str) -> None:
        c = self.containers.pop(name, None)
        if c is not None:
            c.remove(force=True)

    def power_off(self, name: str, grace_s: float) -> None:
        """An ACPI power-off: systemd shuts the VM down, ``grace_s`` before it is cut."""
        c = self.containers.get(name)
        if c is not None:
            c.stop(timeout=max(1, int(grace_s)))

    def reboot(self, name: str, timeout: int = 10) -> None:
        """A reboot: the VM stays RUNNING for Compute Engine while its container restarts."""
        self._rebooting.add(name)
        try:
            self.containers[name].restart(timeout=timeout)
        finally:
            self._rebooting.discard(name)

    def running(self, name: str) -> bool:
        c = self.containers.get(name)
        if c is None:
            return False
        if name in self._rebooting:
            return True
        c.reload()
        return c.status in ("created", "running", "restarting")

    def sh(self, name: str, command: str) -> tuple[int, str]:
        code, out = self.containers[name].exec_run(["sh", "-c", command])
        return code, out.decode(errors="replace")

    def log(self, name: str) -> str:
        try:
            return self.sh(name, "cat /var/log/startup-script.log; journalctl --no-pager -n 80 -u 'burla-*'")[1]
        except Exception as e:  # a removed or stopped container
            return f"(no log: {e})"

    def _metadata_of(self, address: str) -> dict[str, str] | None:
        with self._lock:
            if address in self.metadata:
                return self.metadata[address]
            for name, c in list(self.containers.items()):  # a rebooted VM may come back on another address
                c.reload()
                now = c.attrs["NetworkSettings"]["Networks"].get(self.name, {}).get("IPAddress")
                old = next((a for a, m in self.metadata.items() if m["__name__"] == name), None)
                if now == address and old is not None:
                    self.metadata[address] = self.metadata.pop(old)
                    return self.metadata[address]
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                items = host._metadata_of(self.client_address[0])
                prefix = "/computeMetadata/v1/instance/"
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._reply(403, "Missing required header: Metadata-Flavor")
                if items is None or not self.path.startswith(prefix):
                    return self._reply(404, "not found")
                what = self.path[len(prefix):]
                if what in ("name", "hostname"):
                    return self._reply(200, items["__name__"])
                if what.startswith("attributes/") and what[len("attributes/"):] in items:
                    return self._reply(200, items[what[len("attributes/"):]])
                return self._reply(404, "not found")

            def _reply(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/text")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def describe(host: VmHost) -> str:
    return json.dumps({name: host.log(name)[-3000:] for name in host.containers}, indent=1)
