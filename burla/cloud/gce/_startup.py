"""Startup scripts for burla's VMs: run by Compute Engine at every boot.

Each script, in three idempotent steps:

1. installs burla once: Debian's ``python3-venv``, a venv in ``/opt/burla``
   and the client's own wheel, carried xz'd and base64-encoded in the
   ``burla-wheel-N`` metadata items (~210 KB, in parts under GCE's 256 KB per value), so
   the VM runs exactly the client's version (its dependencies come from
   PyPI).  ``/opt/burla/.installed`` records the version: a reboot skips this;
   an interrupted install redoes it;
2. copies the token, the head's TLS key and certificate and the CA the nodes
   trust from instance metadata into ``/run/burla`` (tmpfs, mode 0700: gone
   at power-off, never on the disk, never in a script, a log or a command
   line);
3. writes and (re)starts a systemd unit that runs the daemon with
   ``Restart=on-failure`` and a raised ``LimitNOFILE``.  A node daemon that is
   done (idle for ``idle_timeout_s``: exit 0; the head gone for good: exit 3)
   powers the VM off, and so does one that keeps crashing; a reboot or a
   ``systemctl restart`` does not.

The fake Compute Engine of the tests reads the ``md KEY > /run/burla/FILE``
lines, the ``EnvironmentFile=`` and the ``ExecStart=`` line of the unit.
"""

from __future__ import annotations

import shlex

from ..._version import __version__
from .._recipes import NODE_EXIT_HEAD_GONE as EXIT_HEAD_GONE
from .._recipes import head_args, node_args

NODE_ENVIRONMENTS = "/var/lib/burla/environments"  # jobs' installed distributions, kept across jobs
RUN = "/run/burla"
_PREAMBLE = """#!/bin/bash
# burla {role} for cluster {cluster} (burla {version}): runs at every boot
set -eu
md() {{ curl -fs -H 'Metadata-Flavor: Google' \\
  "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"; }}
if [ "$(cat /opt/burla/.installed 2>/dev/null)" != "{version}" ]; then  # first boot, or an interrupted one
  echo "burla: installing burla {version}"
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
  rm -rf /opt/burla
  python3 -m venv /opt/burla
  WHEEL="/tmp/$(md burla-wheel-name)"
  for i in $(seq 0 $(( $(md burla-wheel-parts) - 1 ))); do md "burla-wheel-$i"; done | base64 -d | python3 -c \\
    'import lzma, sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))' > "$WHEEL"
  /opt/burla/bin/pip install -q "$WHEEL{extras}"
  echo "{version}" > /opt/burla/.installed
fi
install -d -m 0700 {run}
umask 077
TOKEN="$(md burla-token)"
printf 'BURLA_TOKEN=%s\\n' "$TOKEN" > {run}/env
"""
_UNIT = """cat > /etc/systemd/system/burla-{role}.service <<'UNIT'
[Unit]
Description=burla {role} daemon (cluster {cluster})
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=600
StartLimitBurst=5
{unit_extra}
[Service]
EnvironmentFile={run}/env
ExecStart={exec_start}
Restart=on-failure
RestartSec=2
LimitNOFILE=1048576
{service_extra}
UNIT
systemctl daemon-reload
systemctl restart burla-{role}.service
"""
# A node that is done powers off (it bills while it is on); one stopped because the system is
# going down (a reboot) does not: is-system-running says "stopping" then.
_NODE_DONE = (
    "RestartPreventExitStatus={gone}\n"
    "ExecStopPost=/bin/sh -c 'if [ \"$$EXIT_CODE\" = exited ] && {{ [ \"$$EXIT_STATUS\" = 0 ] || "
    "[ \"$$EXIT_STATUS\" = {gone} ]; }} && [ \"$$(systemctl is-system-running)\" != stopping ]; then "
    "systemctl --no-block poweroff; fi'")


# Crashing 5 times in 10 min: give up and power off (stop billing).  Not FailureAction=: systemd
# 252 (Debian 12) runs that on every failure, even one Restart= is about to restart; OnFailure=
# waits for the unit to fail for good (here: its start limit hit).
_NODE_GIVE_UP = "OnFailure=poweroff.target\nOnFailureJobMode=replace-irreversibly"


def _command(args: list[str]) -> str:
    return "/opt/burla/bin/burla " + " ".join(shlex.quote(a) for a in args)


def node_script(cluster: str, head: str, workers: int | None, idle_timeout_s: int) -> str:
    args = node_args(head, "%H", workers=workers, provider="gce", reconnect_for=300,
                     idle_shutdown=idle_timeout_s, environments=NODE_ENVIRONMENTS, tls_ca=f"{RUN}/ca.pem")
    return (_PREAMBLE.format(role="node", cluster=cluster, version=__version__, run=RUN, extras="")
            + f"md burla-ca > {RUN}/ca.pem\n"
            + "# burla-node-start\n"
            + _UNIT.format(role="node", cluster=cluster, run=RUN, exec_start=_command(args),
                           unit_extra=_NODE_GIVE_UP,
                           service_extra=_NODE_DONE.format(gone=EXIT_HEAD_GONE)))


def head_script(cluster: str, port: int) -> str:
    args = head_args(cluster, host="0.0.0.0", port=port, http_port=port + 1, reap_gce=f"{RUN}/gce.json",
                     tls=(f"{RUN}/head.crt", f"{RUN}/head.key"))
    return (_PREAMBLE.format(role="head", cluster=cluster, version=__version__, run=RUN,
                             extras="[gce]")  # its reaper calls Compute Engine
            + f"md burla-gce > {RUN}/gce.json\nmd burla-tls-cert > {RUN}/head.crt\n"
            + f"md burla-tls-key > {RUN}/head.key\n"
            + "# burla-head-start\n"
            + _UNIT.format(role="head", cluster=cluster, run=RUN, exec_start=_command(args), unit_extra="",
                           service_extra=""))
