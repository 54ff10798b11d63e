"""What a running VM costs, for ``burla status`` (issue 14): Compute Engine's on-demand list prices
in us-central1 (USD per hour, 2025), for the machine types burla's users pick most.  Spot VMs cost a
fraction that varies; ~30% is used as the estimate.  Other types and regions show no figure rather
than a wrong one.  Disks (~$0.04/GB-month for pd-balanced) are not included."""

from __future__ import annotations

ON_DEMAND = {
    "e2-micro": 0.0084, "e2-small": 0.0168, "e2-medium": 0.0335,
    "e2-standard-2": 0.0670, "e2-standard-4": 0.1340, "e2-standard-8": 0.2681, "e2-standard-16": 0.5362,
    "n2-standard-2": 0.0971, "n2-standard-4": 0.1942, "n2-standard-8": 0.3885, "n2-standard-16": 0.7769,
    "n2-standard-32": 1.5539, "n2-standard-80": 3.8846,
    "n2-highmem-4": 0.2620, "n2-highmem-8": 0.5241, "c3-standard-4": 0.2087, "c3-standard-8": 0.4174,
    "n1-standard-1": 0.0475, "n1-standard-2": 0.0950, "n1-standard-4": 0.1900, "n1-standard-8": 0.3800,
}
SPOT_FRACTION = 0.3


def hourly_cost(machine_type: str, spot: bool = False) -> float:
    """USD per hour of one running VM of ``machine_type`` (0.0: not in the table)."""
    price = ON_DEMAND.get(machine_type, 0.0)
    return round(price * (SPOT_FRACTION if spot else 1.0), 4)
