"""The one place where Docker's errors become burla's (``ProviderError``
with the fix in the message)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ..._errors import ProviderError

LABEL_CLUSTER = "burla.cluster"
LABEL_ROLE = "burla.role"


def client() -> Any:
    """A Docker API client, or ProviderError saying why there is none."""
    try:
        import docker
    except ImportError:
        raise ProviderError("the Docker provider needs the docker package: pip install 'burla[docker]'") from None
    with translated():
        c = docker.from_env(timeout=120)
        c.ping()
        return c


@contextlib.contextmanager
def translated(what: str = "") -> Iterator[None]:
    """Turn any Docker SDK / daemon error raised inside into one ProviderError."""
    import docker.errors as errors

    try:
        yield
    except errors.ImageNotFound as e:
        raise ProviderError(
            f"{what or 'Docker'}: image not found ({_explain(e)}). Nothing can be pulled here: "
            "build it with `burla image build` (or `docker load` it) first"
        ) from None
    except errors.NotFound as e:
        raise ProviderError(f"{what or 'Docker'}: {_explain(e)}") from None
    except errors.APIError as e:
        raise ProviderError(f"{what or 'Docker'} failed: {_explain(e)}") from None
    except errors.BuildError as e:  # the daemon answered: a step of the build failed
        log = "".join(str(chunk.get("stream", "")) for chunk in e.build_log if isinstance(chunk, dict))
        raise ProviderError(f"{what or 'docker build'} failed: {e.msg}\n{log.strip()[-1500:]}") from None
    except errors.DockerException as e:
        raise ProviderError(describe_connection_error(e)) from None
    except PermissionError as e:
        raise ProviderError(describe_connection_error(e)) from None


def describe_connection_error(e: BaseException) -> str:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    text = str(e)
    if "Permission denied" in text or isinstance(e, PermissionError):
        return (f"no permission to use the Docker daemon at {where}: add your user to the 'docker' group "
                "(then log in again) or run as root")
    return (f"cannot reach the Docker daemon at {where} ({text.splitlines()[0][:200] if text else type(e).__name__}): "
            "start it (`sudo systemctl start docker`) or point DOCKER_HOST at a running one")


def _explain(e: Any) -> str:
    return str(getattr(e, "explanation", None) or e)
