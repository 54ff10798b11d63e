"""Where burla keeps what ``burla up`` recorded: one JSON file per cluster
(mode 0600, it holds the token) plus ``current`` naming the latest, and the
``ClusterRecord`` those files hold."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from ._errors import ConfigError


class ClusterRecord(msgspec.Struct, kw_only=True):
    """What ``burla up`` writes to the config directory and ``burla down``,
    ``burla status`` and later clients read."""

    name: str
    provider: str = "local"
    head: str = ""  # host:port for clients
    http: str = ""  # http://host:port
    token: str = ""
    ca: str = ""  # PEM of the CA whose certificate the head shows (TLS: a cloud cluster's), else ""
    pids: list[int] = msgspec.field(default_factory=list)  # processes on this machine (local heads, nodes)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # provider-specific (project, zones...)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def config_dir() -> Path:
    base = os.environ.get("BURLA_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "burla"
    )
    return Path(base)


def _cluster_path(name: str) -> Path:
    return config_dir() / "clusters" / f"{name}.json"


def _pending_path(name: str) -> Path:
    return config_dir() / "clusters" / f"{name}.pending.json"


def save_pending(record: ClusterRecord) -> Path:
    """What ``burla up`` writes before it creates anything (``Provider.placeholder``): not a
    cluster to connect to, but what ``burla down`` needs if ``up`` dies."""
    return _write(_pending_path(record.name), record)


def load_pending(name: str) -> ClusterRecord | None:
    path = _pending_path(name)
    try:
        return msgspec.json.decode(path.read_bytes(), type=ClusterRecord)
    except (OSError, msgspec.DecodeError):
        return None


def load_any(name: str | None) -> ClusterRecord | None:
    """The cluster's record, else (for a named cluster) the placeholder of a ``burla up`` that is
    still creating it or died doing so."""
    return load_cluster(name) or (load_pending(name) if name else None)


def save_cluster(record: ClusterRecord) -> Path:
    path = _write(_cluster_path(record.name), record)
    _pending_path(record.name).unlink(missing_ok=True)
    (config_dir() / "current").write_text(record.name)
    return path


def _write(path: Path, record: ClusterRecord) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(record), indent=2))
    os.chmod(path, 0o600)
    return path


def load_cluster(name: str | None = None) -> ClusterRecord | None:
    if name is None:
        current = config_dir() / "current"
        if not current.exists():
            return None
        name = current.read_text().strip()
    path = _cluster_path(name)
    if not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=ClusterRecord)
    except msgspec.DecodeError as e:
        raise ConfigError(f"{path} is not a cluster record ({e}): remove it, or `burla down {name}`") from None


def remove_cluster(name: str) -> None:
    _cluster_path(name).unlink(missing_ok=True)
    _pending_path(name).unlink(missing_ok=True)
    current = config_dir() / "current"
    if current.exists() and current.read_text().strip() == name:
        current.unlink()


def load_for_command(name: str | None, command: str) -> ClusterRecord | None:
    """The cluster a CLI command acts on, or None after telling the user why there is none."""
    record = load_cluster(name)
    if record is None:
        which = f"named {name!r}" if name else "up"
        print(f"burla {command}: no cluster {which} (start one with `burla up`; without one, "
              "remote_parallel_map runs on an embedded local cluster)", file=sys.stderr)
    return record
