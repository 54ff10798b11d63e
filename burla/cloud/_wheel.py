"""burla's own wheel, built from the source tree this client runs from, so
that what runs on nodes (image, VM) is exactly the client's version."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from .._errors import ProviderError


def build_wheel(dest: Path) -> Path:
    """Build into ``dest``.  pip builds in the source tree (``build/``): two builds at once (two
    ``burla up``s) take turns on a lock there instead of mixing their files."""
    project = Path(__file__).resolve().parents[2]
    if not (project / "setup.cfg").exists():
        raise ProviderError("shipping burla to nodes needs burla's source tree (install it with pip install -e)")
    dest.mkdir(parents=True, exist_ok=True)
    (project / "build").mkdir(exist_ok=True)
    with open(project / "build" / ".wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                                 str(dest), str(project)], check=False, capture_output=True, text=True,
                                env=dict(os.environ, SOURCE_DATE_EPOCH="315532800"))
    if result.returncode != 0:
        raise ProviderError(f"could not build burla's wheel: {result.stderr.strip()[-500:]}")
    return next(dest.glob("burla-*.whl"))
