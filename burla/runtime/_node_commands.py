"""The commands ``NodeState`` returns; ``NodeDaemon`` carries them out."""

from __future__ import annotations

from dataclasses import dataclass

from ..transport.messages import AssignJob, Outgoing


@dataclass(frozen=True)
class ToWorker:
    wid: int
    msg: Outgoing


@dataclass(frozen=True)
class ToHead:
    msg: Outgoing


@dataclass(frozen=True)
class Spawn:
    """Launch worker ``wid`` in ``image`` with ``gpus`` GPUs."""

    wid: int
    image: str
    gpus: int


@dataclass(frozen=True)
class Respawn:
    """Call ``NodeState.replace_worker`` after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class ApplyLimits:
    """Give worker ``wid`` the job's CPU/RAM/GPU limits, then report
    ``limits_applied(wid, job_id, ok)``."""

    wid: int
    job_id: str
    func_cpu: int
    func_ram: int
    func_gpu: int


@dataclass(frozen=True)
class Kill:
    wid: int


@dataclass(frozen=True)
class PrepareEnvironment:
    """Make the job's environment (``AssignJob.requirements``/``wheels``) in its
    image, then report ``environment_ready(job_id, path)`` or
    ``environment_failed(job_id, message)``."""

    job_id: str
    image: str
    assign: AssignJob


Command = ToWorker | ToHead | Spawn | Respawn | ApplyLimits | Kill | PrepareEnvironment
