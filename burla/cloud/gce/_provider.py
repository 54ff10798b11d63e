"""``burla up`` with ``provider: {type: gce}``: node VMs on Compute Engine.

The head is a small VM (``head.placement: vm``, nodes reach it on its
internal address through a firewall rule that opens only its port to the
nodes' network tag; a second rule opens its port and HTTP port to
``head.allow_from``, by default this machine's public address) or a process
on this machine (``placement: local``).  Either way it speaks TLS only, with a
certificate of the cluster's own CA (``cloud/_pki.py``): clients and nodes
trust that CA alone, and the token handshake runs inside TLS.
Node VMs carry the label ``burla-cluster=NAME`` and boot a startup script
that installs burla and starts the node daemon.  Zones are tried in order
when one is out of capacity.  Nodes stop themselves when idle for
``idle_timeout_s`` or when the head is gone; the head deletes node VMs that
stop heart-beating.  ``down`` deletes everything carrying the label.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime
import io
import json
import logging
import lzma
import os
import secrets
import socket
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar

from ..._config import ClusterRecord, config_dir
from ..._errors import ProviderError
from .._local import stop_pids
from .._pki import ClusterCertificates, new_certificates
from .._provider import Resource, node_resources
from .._public_ip import SERVICES, as_cidr, public_address
from .._recipes import head_args, python_burla
from .._wheel import build_wheel
from ._api import LABEL, Compute, ZoneExhausted
from ._iam import Iam, wait_until_usable
from ._prices import hourly_cost
from ._spec import HINTS, GceSpec
from ._startup import head_script, node_script

log = logging.getLogger("burla.gce")


WHEEL_PART = 192 * 1024  # base64 characters per metadata value (GCE allows 256 KB per value)


def _wheel_metadata() -> dict[str, str]:
    """burla's wheel for the startup script: re-zipped uncompressed then xz'd as a whole (Python
    sources compress ~35% better solid than file by file), ~210 KB of base64, in parts of
    WHEEL_PART (``burla-wheel-0``, ``-1``...: GCE allows 256 KB per metadata value and 512 KB
    per instance)."""
    with tempfile.TemporaryDirectory() as d:
        wheel = build_wheel(Path(d))
        stored = io.BytesIO()
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as out:
            for info in src.infolist():
                out.writestr(info, src.read(info), compress_type=zipfile.ZIP_STORED)
        packed = lzma.compress(stored.getvalue(), preset=9 | lzma.PRESET_EXTREME)
        text = base64.b64encode(packed).decode()
        parts = [text[i : i + WHEEL_PART] for i in range(0, len(text), WHEEL_PART)]
        return {"burla-wheel-name": wheel.name, "burla-wheel-parts": str(len(parts)),
                **{f"burla-wheel-{i}": part for i, part in enumerate(parts)}}


def _instance(spec: GceSpec, zone: str, name: str, role: str, script: str, token: str, machine_type: str,
              tags: list[str], extra_metadata: dict[str, str], service_account: str | None = None) -> Any:
    from google.cloud import compute_v1 as c

    metadata = {"startup-script": script, "burla-token": token, **extra_metadata}
    inst = c.Instance(
        name=name, machine_type=f"zones/{zone}/machineTypes/{machine_type}",
        labels={LABEL: spec.name, "burla-role": role},
        tags=c.Tags(items=tags),
        disks=[c.AttachedDisk(boot=True, auto_delete=True, initialize_params=c.AttachedDiskInitializeParams(
            source_image=spec.image, disk_size_gb=spec.disk_gb))],
        network_interfaces=[c.NetworkInterface(network=f"global/networks/{spec.network}", access_configs=[
            c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
        metadata=c.Metadata(items=[c.Items(key=k, value=v) for k, v in metadata.items()]),
    )
    if spec.spot:
        inst.scheduling = c.Scheduling(provisioning_model="SPOT", instance_termination_action="DELETE")
    if service_account:  # (nodes get none: no Google API rights at all)
        inst.service_accounts = [c.ServiceAccount(email=service_account,
                                                  scopes=["https://www.googleapis.com/auth/compute"])]
    return inst


class _Creates:
    """The create calls of one ``up``, each in a thread and remembered: after a failure or a
    Ctrl-C, ``settle`` waits for those still running, since a VM whose insert lands after
    ``down`` listed the cluster's would be left billing."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="burla-gce-create")
        self._running: list[concurrent.futures.Future[Any]] = []

    async def run(self, fn: Any, *args: Any) -> Any:
        future = self._pool.submit(fn, *args)
        self._running.append(future)
        return await asyncio.wrap_future(future)

    async def settle(self) -> None:
        await asyncio.to_thread(concurrent.futures.wait, self._running)
        self._pool.shutdown(wait=False)


async def _create_in_some_zone(api: Compute, spec: GceSpec, make: Any, creates: _Creates,
                               insert: Any = None) -> str:
    """Create an instance in the first zone with capacity; returns the zone."""
    tried = []
    for zone in spec.zones:
        try:
            await creates.run(insert or api.insert_instance, zone, make(zone))
            return zone
        except ZoneExhausted as e:
            tried.append(f"{zone} ({e})")
            log.warning("zone %s is out of capacity; trying the next one", zone)
    raise ProviderError(f"every zone is out of capacity: {'; '.join(tried)}: add zones to provider.zones "
                        "or pick another machine_type")


def _where(spec: GceSpec) -> dict[str, Any]:
    """Where the cluster's resources are: what ``down`` searches for its label."""
    return {"project": spec.project, "zones": list(spec.zones), "api_endpoint": spec.api_endpoint}


def reaper_config(spec: GceSpec) -> dict[str, Any]:
    return {"project": spec.project, "zones": list(spec.zones), "api_endpoint": spec.api_endpoint,
            "cluster": spec.name, "reap_after_s": spec.reap_after_s, "sweep_s": min(30, spec.reap_after_s)}


async def up(spec: GceSpec, config_dir: str) -> ClusterRecord:
    api = Compute(spec.project, spec.api_endpoint)
    existing = await asyncio.to_thread(lambda: list(api.list_instances(spec.zones, spec.name)))
    if existing:
        raise ProviderError(f"cluster {spec.name!r} already has {len(existing)} instance(s): "
                            f"`burla down {spec.name}` first")
    allow = await asyncio.to_thread(_allow_from, spec)
    certs = await asyncio.to_thread(new_certificates, spec.name)
    token = secrets.token_urlsafe(32)
    wheel = await asyncio.to_thread(_wheel_metadata)
    pids: list[int] = []
    extra = _where(spec)
    account, fresh = spec.head.service_account or "", False
    if spec.head.placement == "vm" and not account:  # the project's burla-head account, made if missing
        account, fresh = await asyncio.to_thread(Iam(spec.project, spec.api_endpoint).ensure_head_account)
    creates = _Creates()
    try:
        if spec.head.placement == "local":
            head_addr, client_addr, http, pid = _start_local_head(spec, token, config_dir, certs)
            pids.append(pid)
        else:
            head_addr, client_addr, http = await _start_head_vm(api, spec, token, wheel, creates, certs, allow,
                                                                account, fresh)
            extra.update(head_vm=True, allow_from=allow, head_service_account=account)
        node_meta = {**wheel, "burla-ca": certs.ca}
        await asyncio.gather(*(
            _create_in_some_zone(api, spec, lambda zone, i=i: _instance(
                spec, zone, f"burla-{spec.name}-node-{i}", "node",
                node_script(spec.name, head_addr, spec.workers_per_node, spec.idle_timeout_s),
                token, spec.machine_type, [spec.node_tag, *spec.tags], node_meta), creates)
            for i in range(1, spec.nodes + 1)))
    except BaseException:
        await creates.settle()
        await down(spec.name, extra)
        stop_pids(pids)
        raise
    await creates.settle()
    return ClusterRecord(name=spec.name, provider="gce", head=client_addr, http=http, token=token, ca=certs.ca,
                         pids=pids, extra=extra)


def _allow_from(spec: GceSpec) -> list[str]:
    """The CIDRs the head VM's firewall admits clients from (none for a head on this machine)."""
    if spec.head.placement == "local":
        return []
    if spec.head.allow_from:
        return list(spec.head.allow_from)
    address = public_address()
    if address is None:
        raise ProviderError(
            "cannot learn this machine's public address (no answer from "
            f"{', '.join(SERVICES)}), so the head's firewall would admit no client: set head.allow_from in "
            "cluster.yaml to the CIDRs your clients connect from, e.g. head: {allow_from: [203.0.113.7/32]}")
    log.info("the head admits clients from this machine's public address, %s", address)
    return [as_cidr(address)]


def _private_file(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def _local_files(config_dir: str, name: str) -> list[str]:
    return [os.path.join(config_dir, f"{name}.{what}") for what in ("gce.json", "head.crt", "head.key")]


def _start_local_head(spec: GceSpec, token: str, config_dir: str,
                      certs: ClusterCertificates) -> tuple[str, str, str, int]:
    advertise = spec.head.advertise or socket.gethostbyname(socket.gethostname())
    port = spec.head.port
    reap, cert, key = _local_files(config_dir, spec.name)
    _private_file(reap, json.dumps(reaper_config(spec)))
    tls = (_private_file(cert, certs.head_cert), _private_file(key, certs.head_key))
    log_path = os.path.join(config_dir, f"{spec.name}.head.log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            python_burla(*head_args(spec.name, host="0.0.0.0", port=port, http_port=port + 1, reap_gce=reap,
                                    tls=tls)),
            env=dict(os.environ, BURLA_TOKEN=token), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=out, start_new_session=True, cwd="/")
    return f"{advertise}:{port}", f"127.0.0.1:{port}", f"https://127.0.0.1:{port + 1}", proc.pid


async def _start_head_vm(api: Compute, spec: GceSpec, token: str, wheel: dict[str, str], creates: _Creates,
                         certs: ClusterCertificates, allow: list[str], account: str,
                         fresh: bool) -> tuple[str, str, str]:
    from google.cloud import compute_v1 as c

    name = f"burla-{spec.name}-head"
    meta = {"burla-gce": json.dumps(reaper_config(spec)), "burla-tls-cert": certs.head_cert,
            "burla-tls-key": certs.head_key, **wheel}

    def insert(zone: str, inst: Any) -> None:  # a fresh account takes a while to be seen by Compute Engine
        if fresh:
            wait_until_usable(lambda: api.insert_instance(zone, inst), account)
        else:
            api.insert_instance(zone, inst)

    zone = await _create_in_some_zone(api, spec, lambda z: _instance(
        spec, z, name, "head", head_script(spec.name, spec.head.port), token, spec.head.machine_type,
        [spec.head_tag, *spec.tags], meta, account), creates, insert)
    port = spec.head.port
    nodes = c.Firewall(
        name=f"burla-{spec.name}-head", network=f"global/networks/{spec.network}", direction="INGRESS",
        description=f"burla cluster {spec.name}: nodes -> head", source_tags=[spec.node_tag],
        target_tags=[spec.head_tag], allowed=[c.Allowed(I_p_protocol="tcp", ports=[str(port)])])
    clients = c.Firewall(
        name=f"burla-{spec.name}-clients", network=f"global/networks/{spec.network}", direction="INGRESS",
        description=f"burla cluster {spec.name}: clients -> head (TLS) and its dashboard (HTTPS)",
        source_ranges=allow, target_tags=[spec.head_tag],
        allowed=[c.Allowed(I_p_protocol="tcp", ports=[str(port), str(port + 1)])])
    await asyncio.gather(creates.run(api.insert_firewall, nodes), creates.run(api.insert_firewall, clients))
    inst = await asyncio.to_thread(api.get_instance, zone, name)
    nic = inst.network_interfaces[0]
    internal = nic.network_i_p
    external = nic.access_configs[0].nat_i_p if nic.access_configs else internal
    return f"{internal}:{port}", f"{external}:{port}", f"https://{external}:{port + 1}"


async def down(name: str, extra: dict[str, Any]) -> int:
    """Delete every instance labelled with the cluster and its firewall rules."""
    api = Compute(extra["project"], extra.get("api_endpoint"))
    zones = tuple(extra["zones"])
    found = await asyncio.to_thread(lambda: list(api.list_instances(zones, name)))
    await asyncio.gather(*(asyncio.to_thread(api.delete_instance, zone, inst.name) for zone, inst in found))
    rules = await asyncio.to_thread(api.list_firewalls, name)
    await asyncio.gather(*(asyncio.to_thread(api.delete_firewall, r.name) for r in rules))
    return len(found) + len(rules)


async def status(name: str, extra: dict[str, Any]) -> list[Resource]:
    api = Compute(extra["project"], extra.get("api_endpoint"))
    found = await asyncio.to_thread(lambda: list(api.list_instances(tuple(extra["zones"]), name)))
    return [Resource(inst.name, inst.labels.get("burla-role", "?"), inst.status, zone, _created(inst),
                     hourly_cost(inst.machine_type.rsplit("/", 1)[-1],
                                 inst.scheduling.provisioning_model == "SPOT") if inst.status == "RUNNING" else 0.0)
            for zone, inst in sorted(found, key=lambda x: x[1].name)]


def _created(inst: Any) -> float:
    try:
        return datetime.datetime.fromisoformat(inst.creation_timestamp).timestamp()
    except (TypeError, ValueError):
        return 0.0


class GceProvider:
    """``provider: {type: gce}``: google-cloud-compute is blocking, so every
    call runs in a thread (``_api.Compute`` is the only code touching it)."""

    kind: ClassVar[str] = "gce"
    spec_type: ClassVar[type[GceSpec]] = GceSpec
    spec_hints: ClassVar[dict[str, str]] = HINTS
    ready_timeout: ClassVar[float] = 600.0

    async def up(self, spec: GceSpec) -> ClusterRecord:
        cfg = config_dir()
        cfg.mkdir(parents=True, exist_ok=True)
        return await up(spec, str(cfg))

    def placeholder(self, spec: GceSpec) -> ClusterRecord:
        return ClusterRecord(name=spec.name, provider=self.kind, extra=_where(spec))

    async def down(self, name: str, record: ClusterRecord | None) -> int:
        if record is None:
            return 0  # the project and zones to search are in the record
        removed = await down(name, record.extra)
        await asyncio.to_thread(stop_pids, record.pids)
        for path in _local_files(str(config_dir()), name):  # a local head's reaper config and TLS key
            with contextlib.suppress(OSError):
                os.unlink(path)
        return removed

    async def status(self, record: ClusterRecord) -> list[Resource]:
        return await status(record.name, record.extra)

    async def nodes(self, record: ClusterRecord) -> list[Resource]:
        return node_resources(await self.status(record))

    async def exists(self, name: str) -> bool:
        return False

    def log_hint(self, record: ClusterRecord) -> str:
        return f"see the VMs' serial consoles, or {config_dir()}/{record.name}.head.log"
