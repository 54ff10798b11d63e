"""burla.Executor under CPython's own executor tests (issue 12, item 1).

The generic mixins of CPython 3.11's ``test_concurrent_futures`` (ExecutorTest,
ExecutorShutdownTest, WaitTests, AsCompletedTests, InitializerMixin,
FailingInitializerMixin, FutureTests), driven with ``burla.Executor`` on a
real local cluster, exactly as the stdlib drives them with its own executors.
The file comes from Debian's ``libpython3.11-testsuite`` package, fetched
here with ``apt-get download`` (not copied into the repository).

Its functions travel by value (the module lives in a temporary directory no
worker can import from), as a user's script's do.  Its subprocess tests
write ``from concurrent.futures import Executor``, the name of our class;
they get ``from burla import Executor``, run in the module's directory, and
start the embedded cluster of their own, as a user's script would.
"""

from __future__ import annotations

import glob
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from collections.abc import Iterator
from types import ModuleType

import cloudpickle
import pytest

import burla
from tests.conftest import Clusters

PACKAGE = "libpython3.11-testsuite"
MEMBER = "usr/lib/python3.11/test/test_concurrent_futures.py"
MIXINS = ["ExecutorTest", "ExecutorShutdownTest", "WaitTests", "AsCompletedTests", "InitializerMixin",
          "FailingInitializerMixin", "FutureTests"]


def _fetch(into: str) -> str:
    """The test file, from the Debian package (``apt-get update`` first if the lists are stale)."""
    def download() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["apt-get", "download", PACKAGE], cwd=into, capture_output=True, text=True, timeout=300)

    got = download()
    if got.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        got = download()
    assert got.returncode == 0, f"apt-get download {PACKAGE} failed: {got.stderr}"
    deb = glob.glob(os.path.join(into, f"{PACKAGE}_*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(into, "x")], check=True, timeout=120)
    path = os.path.join(into, "test_concurrent_futures.py")
    shutil.copy(os.path.join(into, "x", MEMBER), path)
    return path


@pytest.fixture(scope="module")
def cpython_tests() -> Iterator[ModuleType]:
    where = tempfile.mkdtemp(prefix="burla-cpython-")
    try:
        path = _fetch(where)
        spec = importlib.util.spec_from_file_location("test_concurrent_futures", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        cloudpickle.register_pickle_by_value(module)  # no worker can import it: its functions travel by value
        original = module.assert_python_ok

        def assert_python_ok(*args: str, **env: str):  # type: ignore[no-untyped-def]
            args = tuple(a.replace("from concurrent.futures import Executor\n", "from burla import Executor\n")
                         .replace("from test.test_concurrent_futures import", "from test_concurrent_futures import")
                         for a in args)
            # (an env var also keeps the child out of -I mode, which would drop its cwd from sys.path)
            return original(*args, __cwd=where, PYTHONPATH=where, BURLA_HEAD="", **env)

        module.assert_python_ok = assert_python_ok
        yield module
    finally:
        cloudpickle_unregister(sys.modules.pop("test_concurrent_futures", None))
        shutil.rmtree(where, ignore_errors=True)


def cloudpickle_unregister(module: ModuleType | None) -> None:
    if module is not None:
        try:
            cloudpickle.unregister_pickle_by_value(module)
        except ValueError:
            pass


@pytest.fixture(scope="module")
def five_workers() -> Iterator[None]:
    clusters = Clusters()
    try:
        cluster = clusters.start(nodes=1, workers_per_node=5)
        burla.connect(cluster.record.head, cluster.record.token)
        yield
    finally:
        clusters.stop_all()


@pytest.mark.parametrize("mixin", MIXINS)
def test_cpython_executor_tests_pass_with_burla_executor(mixin: str, cpython_tests: ModuleType,
                                                          five_workers: None) -> None:
    m = cpython_tests
    if mixin == "FutureTests":
        case: type = m.FutureTests
    else:
        burla_mixin = type("BurlaMixin", (m.ExecutorMixin,), {"executor_type": burla.Executor})
        case = type(f"Burla{mixin}", (getattr(m, mixin), burla_mixin, m.BaseTestCase), {})
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    out = io.StringIO()
    handlers, logging.root.handlers = logging.root.handlers, []  # pytest's capture would hide what the tests
    try:  # read from stderr (logging's last resort handler)
        result = unittest.TextTestRunner(stream=out, verbosity=2).run(suite)
    finally:
        logging.root.handlers = handlers
    print(f"{mixin}: {result.testsRun} run, {len(result.failures)} failed, {len(result.errors)} errors, "
          f"{len(result.skipped)} skipped")
    assert result.testsRun > 0
    assert result.wasSuccessful() and not result.skipped, out.getvalue()
