"""The burla command: up / status / down / --version, and cluster.yaml errors."""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import psutil
import pytest

from burla import ConfigError
from burla.cloud import load_spec, stop_pids

from .conftest import ROOT, wait_until


def burla_cli(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "burla", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    yield env
    for path in (tmp_path / "cfg" / "clusters").glob("*.json"):  # whatever a failed test left running
        stop_pids(json.loads(path.read_text()).get("pids", []))


def test_version(cli_env):
    out = burla_cli("--version", env=cli_env)
    assert out.returncode == 0 and out.stdout.startswith("burla ")


def test_up_status_map_down(tmp_path, cli_env):
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: demo\nprovider: {type: local}\nnodes: 2\nworkers_per_node: 1\n")
    up = burla_cli("up", str(spec), env=cli_env)
    assert up.returncode == 0, up.stderr
    record_path = tmp_path / "cfg" / "clusters" / "demo.json"
    record = json.loads(record_path.read_text())
    assert {"name", "head", "http", "token"} <= set(record)
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600

    status = burla_cli("status", "--json", env=cli_env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["head"] == record["head"] and len(info["nodes"]) == 2 and info["workers"] == 2
    assert burla_cli("status", env=cli_env).stdout.startswith("cluster 'demo'")

    # a later script finds the recorded cluster by itself, and both nodes work on it: each call
    # marks its node and waits for the other node's mark, so the job can only finish when the two
    # nodes (one worker each) run calls at the same time -- an event, not a race against the clock
    meet = tmp_path / "meet"
    meet.mkdir()
    ran = subprocess.run([sys.executable, "-c", MEET_SCRIPT, str(meet)], env=cli_env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert len(json.loads(ran.stdout)) == 2  # both nodes worked on it

    jobs = burla_cli("jobs", env=cli_env)
    assert jobs.returncode == 0 and jobs.stdout.split("\n")[0].split() == ["JOB", "FUNCTION", "STATE", "DONE",
                                                                            "FAILED", "SECONDS"], jobs.stdout
    listed = json.loads(burla_cli("jobs", "--json", env=cli_env).stdout)
    assert [(j["state"], j["done"], j["total"]) for j in listed] == [("done", 4, 4)]
    assert f"{listed[0]['job_id']} " in jobs.stdout and " done " in jobs.stdout and " 4/4 " in jobs.stdout

    down = burla_cli("down", env=cli_env)
    assert down.returncode == 0, down.stderr
    assert not record_path.exists()
    for pid in record["pids"]:
        assert not _running(pid)
    assert burla_cli("status", env=cli_env).returncode == 1
    # the head's exit and the nodes' SIGTERM race; whichever wins, nobody prints a traceback (issue 11)
    logs = sorted((tmp_path / "cfg" / "logs" / "demo").glob("*.log"))
    assert len(logs) == 3
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()


MEET_SCRIPT = """
import json, os, sys, time
import burla

def meet(where):
    open(os.path.join(where, str(os.getppid())), "w").close()
    deadline = time.monotonic() + 20
    while len(os.listdir(where)) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other node never ran a call: the job used one node")
        time.sleep(0.01)
    return os.getppid()

print(json.dumps(sorted(set(burla.remote_parallel_map(meet, [sys.argv[1]] * 4, spinner=False)))))
"""


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_up_rejects_unknown_key_by_name(tmp_path, cli_env):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nnodez: 2\n")
    out = burla_cli("up", str(spec), env=cli_env)
    assert out.returncode == 2 and "bad.yaml: nodez: unknown key" in out.stderr


@pytest.mark.parametrize("text, message", [
    ("nodes: two\n", "nodes: expected int, got str; write e.g. nodes: 2"),
    ("provider: {type: aws}\n", "provider.type: provider type 'aws' is not supported"),
    ("workers_per_node: 0\n", "workers_per_node: expected int >= 1"),
    ("provider: {type: docker, worker_runtime: vm}\n", "provider.worker_runtime: invalid enum value 'vm'"),
    ("provider: {type: local, image: x}\n", "provider.image: unknown key"),
    ("- a\n- b\n", "must be a mapping"),
    ("name: [x\n", "not valid YAML"),
])
def test_cluster_yaml_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(text)


@pytest.fixture
def fake_env(tmp_path, cli_env):
    return dict(cli_env, BURLA_PROVIDERS="fake=tests.fake_provider:FakeProvider",
                FAKE_PROVIDER_LOG=str(tmp_path / "provider.log"))


def provider_calls(tmp_path) -> list[str]:
    path = tmp_path / "provider.log"
    return path.read_text().splitlines() if path.exists() else []


def test_cli_drives_any_provider_through_the_interface(tmp_path, fake_env):
    spec = tmp_path / "fake.yaml"
    spec.write_text("name: f1\nprovider: {type: fake}\nnodes: 1\nworkers_per_node: 1\n")
    assert burla_cli("up", str(spec), env=fake_env).returncode == 0
    status = json.loads(burla_cli("status", "--json", env=fake_env).stdout)
    assert status["provider"] == "fake" and {r["role"] for r in status["resources"]} == {"head", "node"}
    pids = json.loads((tmp_path / "cfg" / "clusters" / "f1.json").read_text())["pids"]
    assert burla_cli("down", env=fake_env).returncode == 0
    assert provider_calls(tmp_path) == ["up f1", "status f1", "down f1 recorded"]
    assert not any(_running(pid) for pid in pids)


def test_cli_never_names_a_provider():
    for module in ("_up", "_down", "_status"):
        with open(os.path.join(ROOT, "burla", "cli", f"{module}.py")) as f:
            text = f.read()
        assert not any(name in text for name in ("gce", "docker", "local_cluster")), module


def test_up_whose_nodes_never_register_deletes_what_it_made(tmp_path, fake_env):
    spec = tmp_path / "fake.yaml"
    spec.write_text("name: f2\nprovider: {type: fake, never_ready: true}\n")
    out = burla_cli("up", str(spec), "--timeout", "1", env=fake_env)
    assert out.returncode == 1 and "only 0 of 1 node(s) registered within 1s" in out.stderr
    assert provider_calls(tmp_path) == ["up f2", "down f2 recorded"]
    assert not (tmp_path / "cfg" / "clusters" / "f2.json").exists()


def test_provider_errors_are_one_line(tmp_path, fake_env):
    spec = tmp_path / "fake.yaml"
    spec.write_text("name: f3\nprovider: {type: fake, fail_up: true}\n")
    out = burla_cli("up", str(spec), env=fake_env)
    assert out.returncode == 1 and out.stderr.strip() == "burla up: fake: no capacity in any zone"


def test_down_finds_resources_no_record_names(tmp_path, fake_env):
    spec = tmp_path / "fake.yaml"
    spec.write_text("name: f4\nprovider: {type: fake, leftovers: true}\n")
    assert burla_cli("up", str(spec), env=fake_env).returncode == 0
    record = json.loads((tmp_path / "cfg" / "clusters" / "f4.json").read_text())
    (tmp_path / "cfg" / "clusters" / "f4.json").unlink()  # as if `burla up` died before writing it
    stop_pids(record["pids"])
    out = burla_cli("down", "f4", env=fake_env)
    assert out.returncode == 0, out.stderr
    assert provider_calls(tmp_path)[-1] == "down f4 unrecorded"


def test_unknown_provider_lists_the_plugged_in_ones(tmp_path, fake_env):
    spec = tmp_path / "x.yaml"
    spec.write_text("provider: {type: aws}\n")
    out = burla_cli("up", str(spec), env=fake_env)
    assert out.returncode == 2 and "supported: local, docker, gce, fake" in out.stderr


def test_jobs_without_a_cluster_says_so(cli_env):
    out = burla_cli("jobs", env=cli_env)
    assert out.returncode == 1 and out.stderr.startswith("burla jobs: no cluster up")


def test_down_without_cluster_says_so(cli_env):
    out = burla_cli("down", env=cli_env)
    assert out.returncode == 1 and "no cluster" in out.stderr


def test_exported_names():
    import burla

    assert sorted(burla.__all__) == sorted([
        "AuthenticationError", "BrokenExecutor", "BurlaError", "CallTimeout", "ClusterUnreachable", "ConfigError",
        "ConnectionLost", "Executor", "FunctionLoadError", "InputTooBig", "JobCanceled", "JobFailed", "NoCompatibleNodes", "ProtocolError", "ProviderError",
        "QueueUnavailable", "Job", "JobNotFound", "ResultsExpired", "job",
        "RemoteError", "RemoteExit", "ResultTooBig", "SerializationError", "WorkerCrashed", "__version__", "connect",
        "remote_parallel_map", "remote_parallel_map_async",
        "shutdown",
    ])
    for name in burla.__all__:
        assert hasattr(burla, name)


@pytest.mark.parametrize("source", ["connect", "env", "record"])
def test_an_unreachable_head_names_where_its_address_came_from(cli_env, source):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there
    env = dict(cli_env)
    code = "import burla\n"
    if source == "connect":
        code += f"burla.connect({dead!r}, token='t')\n"
    elif source == "env":
        env.update(BURLA_HEAD=dead, BURLA_TOKEN="t")
    else:
        from burla._config import ClusterRecord, save_cluster

        os.environ["BURLA_CONFIG_DIR"] = env["BURLA_CONFIG_DIR"]
        try:
            save_cluster(ClusterRecord(name="gone", provider="local", head=dead, http="http://127.0.0.1:1", token="t"))
        finally:
            del os.environ["BURLA_CONFIG_DIR"]
    code += "burla.remote_parallel_map(abs, [1], spinner=False)\n"
    ran = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith(f"burla.ClusterUnreachable: no burla head reachable at {dead}")
    assert {"connect": "was given to burla.connect()", "env": "was taken from BURLA_HEAD",
            "record": "recorded by `burla up` for cluster 'gone'; if that cluster is gone, `burla down gone`"
            }[source] in last
    assert "asyncio" not in ran.stderr and "During handling" not in ran.stderr


# --- a local `burla up` head runs under `burla supervise` -------------------------------------

JOB = """
import sys, time, burla
def slow(x):
    import time
    time.sleep(0.2)
    return x
t = time.monotonic()
try:
    burla.remote_parallel_map(slow, range(1000), spinner=False)
except burla.ConnectionLost as e:
    print("ConnectionLost", round(time.monotonic() - t - float(sys.stdin.readline()), 2), flush=True)
"""


def head_child(supervisor: int) -> psutil.Process | None:
    kids = [p for p in psutil.Process(supervisor).children() if "head" in p.cmdline()]
    return kids[0] if kids else None


def nodes(env) -> int:
    out = burla_cli("status", "--json", env=env)
    return len(json.loads(out.stdout)["nodes"]) if out.returncode == 0 else -1


def test_a_crashed_head_is_restarted_and_its_nodes_come_back(tmp_path, cli_env):
    spec = tmp_path / "c.yaml"
    spec.write_text("name: sup\nprovider: {type: local}\nnodes: 2\nworkers_per_node: 1\n")
    assert burla_cli("up", str(spec), env=cli_env).returncode == 0
    record = json.loads((tmp_path / "cfg" / "clusters" / "sup.json").read_text())
    supervisor = record["pids"][0]
    first = wait_until(lambda: head_child(supervisor), 10, "the supervised head")

    # a job running when the head dies: one clear error within seconds, never a hang
    job = subprocess.Popen([sys.executable, "-c", JOB], env=cli_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    wait_until(lambda: burla_jobs(cli_env), 30, "the job to be running")
    killed_at = time.monotonic()
    first.kill()
    out, _ = job.communicate(f"{time.monotonic() - killed_at}\n", timeout=60)
    word, after = out.split()
    assert word == "ConnectionLost" and float(after) < 10, out

    second = wait_until(lambda: (c := head_child(supervisor)) and c.pid != first.pid and c, 30, "a new head")
    wait_until(lambda: nodes(cli_env) == 2, 60, "both nodes registered with the new head")
    assert second.is_running()
    ran = subprocess.run([sys.executable, "-c", "import burla; print(burla.remote_parallel_map(abs, [-1, -2], "
                          "spinner=False))"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "[1, 2]", ran.stderr
    log = (tmp_path / "cfg" / "logs" / "sup" / "head.log").read_text()
    assert "burla supervise: head exited with signal SIGKILL; restarting it in 0.5s" in log

    assert burla_cli("down", env=cli_env).returncode == 0
    for pid in (supervisor, second.pid, *record["pids"][1:]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def burla_jobs(env) -> bool:
    out = burla_cli("status", "--json", env=env)
    return out.returncode == 0 and any(j.get("state") == "running" for j in json.loads(out.stdout).get("jobs", []))


def test_a_head_that_keeps_crashing_is_given_up_on_in_one_line(cli_env):
    with socket.socket() as taken:  # the head cannot bind it: it exits 1 at every start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "burla", "supervise", "--restarts", "2", "--", "head", "--port",
                              str(port)], env=cli_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("burla supervise:")]
    assert lines == ["burla supervise: head exited with status 1; restarting it in 0.5s",
                     "burla supervise: head exited with status 1; restarting it in 1s",
                     "burla supervise: head exited with status 1, its 3th crash within 600s; not restarting it"]
