"""The embedded default cluster: works with no set-up and dies with its parent."""

import os
import signal
import subprocess
import sys
import textwrap

import psutil

from .conftest import ROOT, wait_until


def _env(tmp_path) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    return env


def test_quickstart_runs_on_embedded_cluster_and_leaves_nothing(tmp_path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py")], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "squares: [0, 1, 4" in out.stdout and "[#19] running" in out.stdout


def test_local_module_next_to_script_is_shipped_by_value(tmp_path):
    (tmp_path / "helpers_mod.py").write_text("def triple(x):\n    return 3 * x\n")
    (tmp_path / "main.py").write_text(textwrap.dedent("""
        import burla, helpers_mod
        def f(x):
            return helpers_mod.triple(x)
        print(burla.remote_parallel_map(f, [1, 2], spinner=False))
    """))
    # the workers start elsewhere (ROOT) and cannot import helpers_mod themselves
    out = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[3, 6]"


def test_a_nested_call_in_a_script_runs_on_the_same_embedded_cluster(tmp_path):
    (tmp_path / "main.py").write_text(textwrap.dedent("""
        import os, burla
        def inner(y):
            return os.getppid()
        def outer(x):
            print("outer", x)
            return os.getppid(), burla.remote_parallel_map(inner, range(3))
        out = burla.remote_parallel_map(outer, range(4), spinner=False)
        nodes = {p for p, _ in out} | {q for _, inner_nodes in out for q in inner_nodes}
        print("nodes", len(nodes))
    """))
    out = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "nodes 1" in out.stdout  # never a new cluster inside a worker
    assert sorted(line for line in out.stdout.splitlines() if line.startswith("outer")) == [f"outer {i}" for i in range(4)]


def test_async_app_can_call_from_a_running_loop(tmp_path):
    code = textwrap.dedent("""
        import asyncio, burla
        async def handler():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, burla.remote_parallel_map, abs, [-1, -2])
        async def main():
            direct = burla.remote_parallel_map(abs, [-5], spinner=False)  # blocks the loop, still works
            print(direct, await handler())
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[5] [1, 2]"


def test_embedded_cluster_dies_with_a_sigkilled_client(tmp_path):
    code = textwrap.dedent("""
        import burla, psutil, time, sys
        def f(x):
            print("running", flush=True)
            time.sleep(60)
        gen = burla.remote_parallel_map(f, range(2), generator=True, spinner=False)
        import threading
        threading.Thread(target=lambda: list(gen), daemon=True).start()
        while len(psutil.Process().children(recursive=True)) < 4:
            time.sleep(0.05)
        print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        pids = []
        while not pids:
            line = p.stdout.readline()
            assert line, "client exited early"
            if line.strip() and line.split()[0].isdigit():
                pids = [int(x) for x in line.split()]
        children = [psutil.Process(pid) for pid in pids]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

        def all_gone():
            alive = []
            for c in children:
                try:
                    if c.status() != psutil.STATUS_ZOMBIE:
                        alive.append(c)
                except psutil.NoSuchProcess:
                    pass
            return not alive

        wait_until(all_gone, 10, "head, node and workers to exit after their client was SIGKILLed")
    finally:
        p.kill()
        p.stdout.close()


def test_progress_bar_on_a_terminal(tmp_path):
    import pty

    code = "import burla\nburla.remote_parallel_map(abs, range(20))\nprint('DONE')\n"
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", code], env=dict(_env(tmp_path), COLUMNS="100"), stdout=slave,
                         stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        p.wait(30)
    finally:
        p.kill()
        os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0, text
    assert "abs" in text and "20/20" in text and "DONE" in text


def test_head_and_node_commands_form_a_cluster(tmp_path):
    import json

    env = _env(tmp_path)
    head = subprocess.Popen([sys.executable, "-m", "burla", "head", "--token", "tok"], env=env,
                            stdout=subprocess.PIPE, text=True)
    node = None
    try:
        ready = json.loads(head.stdout.readline())
        node = subprocess.Popen([sys.executable, "-m", "burla", "node", "--head", ready["head"], "--token", "tok",
                                 "--workers", "1"], env=env)
        code = "import burla\nprint(burla.remote_parallel_map(abs, [-1, -2], spinner=False))"
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, BURLA_HEAD=ready["head"], BURLA_TOKEN="tok"),
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "[1, 2]", out.stderr
    finally:
        for p in (node, head):
            if p is not None:
                p.terminate()
                p.wait(10)
        head.stdout.close()


def test_workers_run_without_msgspec_as_in_a_users_image(tmp_path):
    code = textwrap.dedent("""
        import burla
        def probe(x):
            import sys
            print("pure worker", x)
            if x == 2:
                raise ValueError("boom")
            return (x * 10, "msgspec" in sys.modules)
        out = burla.remote_parallel_map(probe, range(4), raise_errors=False, spinner=False)
        print(out[:2], out[3], type(out[2]).__name__, out[2].burla_input_index)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=dict(_env(tmp_path), BURLA_WORKER_PURE="1"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pure worker 3" in out.stdout
    assert "[(0, False), (10, False)] (30, False) ValueError 2" in out.stdout


def test_daemons_raise_their_file_limit_to_the_hard_limit(clusters):
    """1,000 nodes are 1,000 descriptors at the head: a soft limit of 1024 must not cap it (issue 10)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        cluster = clusters.start(nodes=1, workers_per_node=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for proc in cluster.procs:  # head and node
        limits = psutil.Process(proc.pid).rlimit(psutil.RLIMIT_NOFILE)
        assert limits[0] == hard or hard == resource.RLIM_INFINITY, limits
