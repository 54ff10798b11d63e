"""Startup scripts for burla's VMs.

The token is read from instance metadata at boot into the daemon's
environment; it is never written into the script, a log or a command line.
burla itself comes from the client's own wheel, carried base64-encoded in
the ``burla-wheel`` metadata item (~130 KB, under GCE's 256 KB per value),
so nodes run exactly the client's version; its dependencies come from PyPI.
The line after ``# burla-node-start`` / ``# burla-head-start`` is the one
command that starts the daemon (tests run exactly that line locally).
"""

from __future__ import annotations

import shlex

from ..._version import __version__
from .._recipes import head_args, node_args

NODE_ENVIRONMENTS = "/var/lib/burla/environments"  # jobs' installed distributions, kept across jobs
_PREAMBLE = """#!/bin/bash
# burla {role} for cluster {cluster} (burla {version})
set -eu
md() {{ curl -fs -H 'Metadata-Flavor: Google' \
  "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"; }}
TOKEN="$(md burla-token)"
if [ ! -x /opt/burla/bin/burla ]; then
  apt-get update -qq
  apt-get install -y -qq python3-venv docker.io >/dev/null
  python3 -m venv /opt/burla
  WHEEL="/tmp/$(md burla-wheel-name)"
  md burla-wheel | base64 -d > "$WHEEL"
  /opt/burla/bin/pip install -q "$WHEEL"
fi
"""


def node_script(cluster: str, head: str, workers: int | None, idle_timeout_s: int, worker_image: str | None) -> str:
    args = node_args(head, "$(hostname)", workers=workers, provider="gce", reconnect_for=300,
                     idle_shutdown=idle_timeout_s, environments=NODE_ENVIRONMENTS)
    cmd = " ".join(a if a.startswith("$(") else shlex.quote(a) for a in args).replace("$(hostname)", '"$(hostname)"')
    return (_PREAMBLE.format(role="node", cluster=cluster, version=__version__)
            + f'# burla-node-start\nBURLA_TOKEN="$TOKEN" /opt/burla/bin/burla {cmd}\n'
            + "# the daemon exits when idle or when the head is gone for good: stop billing\nshutdown -h now\n")


def head_script(cluster: str, port: int) -> str:
    args = head_args(cluster, host="0.0.0.0", port=port, http_port=port + 1, reap_gce_metadata=True)
    return (_PREAMBLE.format(role="head", cluster=cluster, version=__version__)
            + '# burla-head-start\nBURLA_TOKEN="$TOKEN" BURLA_GCE="$(md burla-gce)" /opt/burla/bin/burla '
            + " ".join(shlex.quote(a) for a in args) + "\n")
