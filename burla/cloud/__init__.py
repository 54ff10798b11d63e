"""Node providers.  ``local``: processes on this machine."""

from ._local import ClusterRecord, LocalCluster, start_local_cluster, stop_pids

__all__ = ["ClusterRecord", "LocalCluster", "start_local_cluster", "stop_pids"]
