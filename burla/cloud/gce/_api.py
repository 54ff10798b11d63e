"""The one boundary to Google's ``google-cloud-compute`` library.

Every call is synchronous (the provider runs them through
``asyncio.to_thread``); every Google error becomes a ProviderError with the
fix, except a zone out of capacity, which is ``ZoneExhausted`` so the
provider can try the next zone.  Operations are awaited with the library's
own zone/global operations clients built with the same ``client_options``,
so a custom ``api_endpoint`` is honoured everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

from ..._errors import ProviderError

LABEL = "burla-cluster"
_CAPACITY = {"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_POOL_EXHAUSTED"}


class ZoneExhausted(Exception):
    pass


class Compute:
    def __init__(self, project: str, api_endpoint: str | None = None, op_timeout: float = 600.0):
        try:
            from google.cloud import compute_v1
        except ImportError:
            raise ProviderError("the gce provider needs google-cloud-compute: pip install 'burla[gce]'") from None
        self.project = project
        self.op_timeout = op_timeout
        kwargs: dict[str, Any] = {}
        if api_endpoint:
            kwargs["client_options"] = {"api_endpoint": api_endpoint}
            if api_endpoint.startswith("http://"):  # a local emulator: no Google credentials involved
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth is untyped here
        with translated(project):
            self.instances = compute_v1.InstancesClient(**kwargs)
            self.firewalls = compute_v1.FirewallsClient(**kwargs)
            self.zone_ops = compute_v1.ZoneOperationsClient(**kwargs)
            self.global_ops = compute_v1.GlobalOperationsClient(**kwargs)

    # --- instances -----------------------------------------------------------------

    def insert_instance(self, zone: str, instance: Any) -> None:
        with translated(self.project, f"creating instance {instance.name} in {zone}"):
            op = self.instances.insert_unary(project=self.project, zone=zone, instance_resource=instance)
            self._wait_zone(zone, op)

    def delete_instance(self, zone: str, name: str) -> bool:
        from google.api_core import exceptions

        with translated(self.project, f"deleting instance {name}"):
            try:
                op = self.instances.delete_unary(project=self.project, zone=zone, instance=name)
            except exceptions.NotFound:
                return False
            self._wait_zone(zone, op)
        return True

    def get_instance(self, zone: str, name: str) -> Any:
        with translated(self.project, f"reading instance {name}"):
            return self.instances.get(project=self.project, zone=zone, instance=name)

    def list_instances(self, zones: tuple[str, ...], cluster: str) -> Iterator[tuple[str, Any]]:
        for zone in zones:
            with translated(self.project, f"listing instances in {zone}"):
                from google.cloud import compute_v1

                request = compute_v1.ListInstancesRequest(project=self.project, zone=zone,
                                                          filter=f'labels.{LABEL} = "{cluster}"')
                for inst in self.instances.list(request=request):  # the pager follows nextPageToken
                    yield zone, inst

    # --- firewall rules -----------------------------------------------------------------

    def insert_firewall(self, firewall: Any) -> None:
        with translated(self.project, f"creating firewall rule {firewall.name}"):
            op = self.firewalls.insert_unary(project=self.project, firewall_resource=firewall)
            self._wait_global(op)

    def delete_firewall(self, name: str) -> bool:
        from google.api_core import exceptions

        with translated(self.project, f"deleting firewall rule {name}"):
            try:
                op = self.firewalls.delete_unary(project=self.project, firewall=name)
            except exceptions.NotFound:
                return False
            self._wait_global(op)
        return True

    def list_firewalls(self, cluster: str) -> list[Any]:
        with translated(self.project, "listing firewall rules"):
            from google.cloud import compute_v1

            request = compute_v1.ListFirewallsRequest(project=self.project, filter=f'name = "burla-{cluster}-*"')
            return list(self.firewalls.list(request=request))

    # --- operations ------------------------------------------------------------------------

    def _wait_zone(self, zone: str, op: Any) -> None:
        self._wait(op, lambda: self.zone_ops.wait(project=self.project, zone=zone, operation=op.name))

    def _wait_global(self, op: Any) -> None:
        self._wait(op, lambda: self.global_ops.wait(project=self.project, operation=op.name))

    def _wait(self, op: Any, poll: Any) -> None:
        from google.cloud import compute_v1

        deadline = time.monotonic() + self.op_timeout
        while op.status != compute_v1.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise ProviderError(f"operation {op.name} did not finish within {self.op_timeout:g}s")
            op = poll()
        errors = list(op.error.errors) if op.error else []
        if not errors:
            return
        codes = {e.code for e in errors}
        text = "; ".join(f"{e.code}: {e.message}" for e in errors)
        if codes & _CAPACITY:
            raise ZoneExhausted(text)
        if "QUOTA_EXCEEDED" in codes:
            raise ProviderError(f"quota exceeded in project {self.project} ({text}): request more quota in the "
                                "console (IAM & Admin > Quotas), use a smaller machine_type or fewer nodes")
        raise ProviderError(f"operation {op.name} failed: {text}")


class translated:
    """Context manager: Google API errors -> ProviderError (one boundary)."""

    def __init__(self, project: str, what: str = "calling Compute Engine"):
        self.project, self.what = project, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, (ProviderError, ZoneExhausted)):
            return False
        from google.api_core import exceptions
        from google.auth import exceptions as auth_exceptions

        if isinstance(exc, auth_exceptions.DefaultCredentialsError):
            raise ProviderError("no Google credentials found: run `gcloud auth application-default login` or set "
                                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file") from None
        if isinstance(exc, exceptions.Forbidden):
            raise ProviderError(
                f"{self.what}: permission denied in project {self.project} ({exc.message}): enable the Compute "
                "Engine API and grant your account roles/compute.instanceAdmin.v1 and roles/compute.securityAdmin"
            ) from None
        if isinstance(exc, exceptions.Conflict):
            raise ProviderError(
                f"{self.what}: already exists ({exc.message}): `burla down` the cluster first") from None
        if isinstance(exc, exceptions.GoogleAPICallError):
            raise ProviderError(f"{self.what}: {exc.code} {exc.message}") from None
        if isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.startswith(("requests", "urllib3")):
            raise ProviderError(f"{self.what}: cannot reach the Compute Engine API ({exc})") from None
        return False
