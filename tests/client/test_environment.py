"""The client's half of reproducing its environment on the workers (issue 12, item 4):
what is installed here, what an image lacks, local projects built into wheels (real pip)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import textwrap
import zipfile

import pytest

import burla
from burla.client._environment import Requirement, build_wheel, installed, missing_from
from tests.conftest import ROOT


def write_dist(site, name, version, direct_url=None):
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


def test_installed_lists_this_interpreters_distributions_with_versions_and_local_projects():
    reqs = {r.name: r for r in installed()}
    assert reqs["msgspec"] == Requirement("msgspec", importlib.metadata.version("msgspec"), "")
    assert os.path.samefile(reqs["burla"].local_path, ROOT)  # installed from this checkout


def test_names_are_canonical_and_local_directories_come_from_pep_610(tmp_path):
    project = tmp_path / "src" / "my proj"
    project.mkdir(parents=True)
    site = tmp_path / "site"
    write_dist(site, "My_Pkg", "1.2", {"url": project.as_uri(), "dir_info": {"editable": True}})
    write_dist(site, "from.a.wheel", "3.0", {"url": (tmp_path / "w.whl").as_uri(), "archive_info": {}})
    write_dist(site, "plain", "0.1")
    assert installed([str(site)]) == [Requirement("from-a-wheel", "3.0", ""), Requirement("my-pkg", "1.2", str(project)),
                                      Requirement("plain", "0.1", "")]


def test_an_image_lacks_what_it_does_not_have_at_the_same_version_and_every_local_project():
    reqs = [Requirement("pandas", "2.2.3"), Requirement("numpy", "2.1.0"), Requirement("tool", "1.0", "/src/tool")]
    assert missing_from(reqs, {"numpy": "2.1.0", "pandas": "2.1.0", "tool": "1.0"}) == [reqs[0], reqs[2]]
    assert missing_from(reqs[:2], {"numpy": "2.1.0", "pandas": "2.2.3"}) == []  # in place: nothing to do


def make_project(root, body="X = 1\n"):
    (root / "mini").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "Mini_Thing"
        version = "0.3.1"
    """))
    (root / "mini" / "__init__.py").write_text(body)


def test_a_local_project_is_built_into_a_wheel_once_per_state_of_its_files(tmp_path):
    make_project(tmp_path / "proj")
    req = Requirement("mini-thing", "0.3.1", str(tmp_path / "proj"))
    wheel = build_wheel(req, str(tmp_path / "cache"))
    assert os.path.basename(wheel) == "mini_thing-0.3.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        assert z.read("mini/__init__.py") == b"X = 1\n"
    built_at = os.stat(wheel).st_mtime_ns
    assert build_wheel(req, str(tmp_path / "cache")) == wheel and os.stat(wheel).st_mtime_ns == built_at  # cached
    make_project(tmp_path / "proj", body="X = 2\n")  # an edit: a new wheel with it
    with zipfile.ZipFile(build_wheel(req, str(tmp_path / "cache"))) as z:
        assert z.read("mini/__init__.py") == b"X = 2\n"


def test_a_project_that_does_not_build_fails_with_pips_output(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pyproject.toml").write_text("[build-system\n")  # not TOML
    with pytest.raises(burla.ConfigError, match=r"(?s)could not build a wheel of the local project bad.*pip"):
        build_wheel(Requirement("bad", "1.0", str(tmp_path / "bad")), str(tmp_path / "cache"))
    with pytest.raises(burla.ConfigError, match="not a project directory here"):
        build_wheel(Requirement("gone", "1.0", str(tmp_path / "nowhere")), str(tmp_path / "cache"))


def test_a_job_carries_every_shipped_distribution_and_the_wheels_of_local_projects(tmp_path, monkeypatch):
    from burla.client import _environment
    from burla.transport.messages import Dist

    site = tmp_path / "site"
    make_project(tmp_path / "proj")
    write_dist(site, "Mini_Thing", "0.3.1", {"url": (tmp_path / "proj").as_uri(), "dir_info": {"editable": True}})
    write_dist(site, "burla", "0.1.0", {"url": (tmp_path / "proj").as_uri(), "dir_info": {}})  # never shipped
    for name, version in (("pip", "24.0"), ("setuptools", "70.0"), ("pyobjc-core", "10.0"), ("torch", "2.1.0+cu121"),
                          ("six", "1.16.0")):
        write_dist(site, name, version)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_environment, "_scanned", None)
    monkeypatch.setattr(sys, "path", [str(site)])
    dists, wheels = _environment.job_environment()
    assert dists == [Dist("mini-thing", "0.3.1", local=True), Dist("six", "1.16.0"), Dist("torch", "2.1.0")]
    assert list(wheels) == ["mini_thing-0.3.1-py3-none-any.whl"]
    assert _environment.job_environment() == (dists, wheels)  # cached: sys.path did not change
    write_dist(site, "tzdata", "2024.1")  # an install changes the directory: scanned again
    assert _environment.job_environment()[0][-1] == Dist("tzdata", "2024.1")


def test_sync_packages_is_a_bool_whose_default_the_environment_can_turn_off(monkeypatch):
    from burla.client._api import syncs_packages

    monkeypatch.delenv("BURLA_SYNC_PACKAGES")
    assert syncs_packages(None) is True and syncs_packages(False) is False
    for off in ("0", "false", "No", "off"):
        monkeypatch.setenv("BURLA_SYNC_PACKAGES", off)
        assert syncs_packages(None) is False and syncs_packages(True) is True
    with pytest.raises(burla.ConfigError, match="sync_packages must be True or False, got 'yes'"):
        burla.remote_parallel_map(abs, [1], sync_packages="yes")
