"""The head VM's identity: a service account that may list and delete VMs, and nothing else.

``burla up`` (head on a VM, no ``head.service_account`` given) makes sure the
project has, idempotently:

- the service account ``burla-head@PROJECT.iam.gserviceaccount.com``;
- the custom role ``projects/PROJECT/roles/burlaHead`` holding exactly
  ``HEAD_PERMISSIONS`` (what the reaper calls: list, delete, wait on the
  delete);
- a project binding of that role to that account.

The account is shared by every cluster of the project and kept by ``burla
down`` (it costs nothing).  Node VMs get no service account at all.  These
are the IAM and Resource Manager REST APIs (google-auth's authorized
session; with an ``http://`` endpoint, the tests' fake, no credentials).
"""

from __future__ import annotations

import time
from typing import Any

from ..._errors import ProviderError

ACCOUNT_ID = "burla-head"
ROLE_ID = "burlaHead"
HEAD_PERMISSIONS = ("compute.instances.delete", "compute.instances.list", "compute.zoneOperations.get")
IAM = "https://iam.googleapis.com"
CRM = "https://cloudresourcemanager.googleapis.com"
_NEEDS = ("roles/iam.serviceAccountAdmin, roles/iam.roleAdmin and roles/resourcemanager.projectIamAdmin "
          "(or have an administrator make one and set head.service_account; the README lists its permissions)")


def head_account_email(project: str) -> str:
    return f"{ACCOUNT_ID}@{project}.iam.gserviceaccount.com"


class Iam:
    def __init__(self, project: str, api_endpoint: str | None = None, timeout: float = 30.0):
        self.project = project
        self.timeout = timeout
        if api_endpoint and api_endpoint.startswith("http://"):  # a local emulator of every Google API
            import requests

            self.session: Any = requests.Session()
            self.iam, self.crm = f"{api_endpoint}/iam", f"{api_endpoint}/crm"
        else:
            try:
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            except ImportError:
                raise ProviderError("the gce provider needs google-cloud-compute: pip install 'burla[gce]'") from None
            except Exception as e:  # DefaultCredentialsError
                raise ProviderError(f"no Google credentials found ({e}): run `gcloud auth application-default "
                                    "login`") from None
            self.session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]  # google-auth is untyped here
            self.iam, self.crm = IAM, CRM

    def ensure_head_account(self) -> tuple[str, bool]:
        """The head's service account, made if missing; (email, whether it was just made)."""
        email = head_account_email(self.project)
        base = f"{self.iam}/v1/projects/{self.project}"
        made = False
        if self._call("GET", f"{base}/serviceAccounts/{email}", "reading the head's service account",
                      missing_ok=True) is None:
            self._call("POST", f"{base}/serviceAccounts", "creating the head's service account", {
                "accountId": ACCOUNT_ID,
                "serviceAccount": {"displayName": "burla head: deletes its cluster's silent node VMs"}})
            made = True
        role = self._call("GET", f"{base}/roles/{ROLE_ID}", "reading the head's role", missing_ok=True)
        wanted = {"title": "burla head", "description": "list and delete VMs (burla's reaper)",
                  "includedPermissions": list(HEAD_PERMISSIONS), "stage": "GA"}
        if role is None:
            self._call("POST", f"{base}/roles", "creating the head's role", {"roleId": ROLE_ID, "role": wanted})
        elif sorted(role.get("includedPermissions", [])) != sorted(HEAD_PERMISSIONS):
            self._call("PATCH", f"{base}/roles/{ROLE_ID}?updateMask=includedPermissions",
                       "updating the head's role", wanted)
        self._bind(f"projects/{self.project}/roles/{ROLE_ID}", f"serviceAccount:{email}")
        return email, made

    def _bind(self, role: str, member: str) -> None:
        url = f"{self.crm}/v1/projects/{self.project}"
        for _ in range(5):  # a concurrent change moves the etag: read again and retry
            policy = self._call("POST", f"{url}:getIamPolicy", "reading the project's IAM policy", {}) or {}
            bindings = policy.setdefault("bindings", [])
            binding = next((b for b in bindings if b.get("role") == role and not b.get("condition")), None)
            if binding is not None and member in binding.get("members", []):
                return
            if binding is None:
                bindings.append({"role": role, "members": [member]})
            else:
                binding["members"].append(member)
            if self._call("POST", f"{url}:setIamPolicy", "granting the head its role", {"policy": policy},
                          conflict_ok=True) is not None:
                return
        raise ProviderError("granting the head its role: the project's IAM policy kept changing; try again")

    def _call(self, method: str, url: str, what: str, body: dict[str, Any] | None = None, *,
              missing_ok: bool = False, conflict_ok: bool = False) -> dict[str, Any] | None:
        try:
            resp = self.session.request(method, url, json=body, timeout=self.timeout)
        except OSError as e:
            raise ProviderError(f"{what}: cannot reach the IAM API ({e})") from None
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code == 409 and conflict_ok:
            return None
        if resp.status_code == 403:
            raise ProviderError(f"{what}: permission denied in project {self.project} ({_message(resp)}): making "
                                f"the head's service account needs {_NEEDS}")
        if resp.status_code >= 400:
            raise ProviderError(f"{what}: {resp.status_code} {_message(resp)}")
        out: dict[str, Any] = resp.json() if resp.content else {}
        return out


def _message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(resp.text)[:200]


def wait_until_usable(insert: Any, email: str, deadline_s: float = 90.0) -> None:
    """Run ``insert`` (a VM naming ``email``), retrying while Compute Engine does not see a service
    account made seconds ago yet (IAM is eventually consistent)."""
    deadline = time.monotonic() + deadline_s
    delay = 1.0
    while True:
        try:
            insert()
            return
        except ProviderError as e:
            if email not in str(e) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
