"""Node providers behind one interface (``Provider``), chosen by
``provider.type`` in cluster.yaml: ``local`` (processes on this machine),
``docker`` (containers) and ``gce`` (Compute Engine VMs)."""

from .._config import ClusterRecord
from ._local import LocalCluster, start_local_cluster, stop_pids
from ._provider import Provider, Resource
from ._registry import get_provider, provider_types
from ._spec import load_spec

__all__ = ["ClusterRecord", "LocalCluster", "Provider", "Resource", "get_provider", "load_spec", "provider_types",
           "start_local_cluster", "stop_pids"]
