"""remote_parallel_map end to end on a real local cluster (processes + loopback TCP)."""

import asyncio
import os
import signal
import threading

import numpy as np
import pytest

import burla
from burla import remote_parallel_map as rpm


def square(x):
    return x * x


def add(a, b):
    return a + b


def test_results_come_back_in_input_order(on_cluster):
    assert rpm(square, list(range(500)), spinner=False) == [x * x for x in range(500)]


def test_tuples_are_unpacked_into_arguments(on_cluster):
    assert rpm(add, [(1, 2), (3, 4)], spinner=False) == [3, 7]


def test_empty_inputs(on_cluster):
    assert rpm(square, [], spinner=False) == []
    assert list(rpm(square, iter([]), generator=True, spinner=False)) == []


def test_generator_inputs_and_generator_results(on_cluster):
    gen = (i for i in range(300))
    out = list(rpm(square, gen, generator=True, spinner=False))
    assert sorted(out) == [x * x for x in range(300)]
    ordered = list(rpm(square, (i for i in range(300)), generator=True, ordered=True, spinner=False))
    assert ordered == [x * x for x in range(300)]


def test_lambda_and_closure_from_main(on_cluster):
    k = 10
    assert rpm(lambda x: x + k, [1, 2], spinner=False) == [11, 12]


def test_prints_reach_client_stdout_and_stderr(on_cluster, capfd):
    def chatty(x):
        import sys

        print(f"out-{x}")
        print(f"err-{x}", file=sys.stderr)
        return x

    rpm(chatty, range(5), spinner=False)
    out, err = capfd.readouterr()
    assert all(f"out-{i}" in out for i in range(5))
    assert all(f"err-{i}" in err for i in range(5))


def test_user_exception_reraised_with_remote_traceback(on_cluster):
    def fails(x):
        if x == 13:
            raise KeyError(f"no {x}")
        return x

    with pytest.raises(KeyError) as info:
        rpm(fails, range(40), spinner=False)
    assert info.value.burla_input_index == 13
    frames = [f.name for f in info.traceback]
    assert "fails" in frames  # the remote frame is part of the traceback


def test_raise_errors_false_puts_exception_in_place(on_cluster):
    def fails(x):
        if x % 2:
            raise ValueError(x)
        return x

    out = rpm(fails, range(4), raise_errors=False, spinner=False)
    assert out[0] == 0 and out[2] == 2
    assert isinstance(out[1], ValueError) and out[1].burla_input_index == 1


def test_exception_that_cannot_be_unpickled_becomes_remote_error(on_cluster):
    def fails(x):
        class Local(Exception):
            def __reduce__(self):
                raise TypeError("no pickling")

        raise Local("inner")

    with pytest.raises(burla.RemoteError, match="Local") as info:
        rpm(fails, [1], spinner=False)
    assert info.value.burla_input_index == 0 and "inner" in info.value.remote_traceback


def test_a_remote_sys_exit_is_an_error_naming_the_input_and_the_code(on_cluster):
    import sys

    def exits(x):
        if x == 2:
            sys.exit(3)
        return x

    with pytest.raises(burla.RemoteExit, match=r"input 2: the function called sys.exit\(3\)") as info:
        rpm(exits, range(5), spinner=False)
    assert info.value.code == 3 and info.value.burla_input_index == 2
    out = rpm(exits, range(4), raise_errors=False, spinner=False)
    assert out[:2] == [0, 1] and isinstance(out[2], burla.RemoteExit) and out[3] == 3


def test_a_script_whose_remote_function_exits_does_not_exit_0(on_cluster):
    from ..conftest import run_script

    code = (
        "import sys, burla\n"
        f"burla.connect({on_cluster.record.head!r}, token={on_cluster.record.token!r})\n"
        "def f(x):\n    sys.exit(0)\n"
        "burla.remote_parallel_map(f, [1], spinner=False)\n"
        "print('after the map')\n"
    )
    ran = run_script(code)
    assert ran.returncode == 1 and "after the map" not in ran.stdout
    assert "burla.RemoteExit" in ran.stderr and "sys.exit(0)" in ran.stderr


def test_a_remote_keyboard_interrupt_is_the_functions_error_not_a_cancel(on_cluster):
    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(burla.RemoteError, match="KeyboardInterrupt") as info:
        rpm(interrupted, [7], spinner=False)
    assert not isinstance(info.value, burla.RemoteExit) and info.value.burla_input_index == 0


def test_numpy_arrays_and_large_bytes(on_cluster):
    arrays = rpm(np.arange, [3, 100_000], spinner=False)
    assert arrays[1].sum() == np.arange(100_000).sum()
    blob = os.urandom(8 << 20)
    assert rpm(bytes, [blob], spinner=False) == [blob]


def test_unpicklable_function_named_before_anything_is_sent(on_cluster):
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(burla.SerializationError, match="uses_lock"):
        rpm(uses_lock, [1], spinner=False)


def test_unpicklable_input_is_named(on_cluster):
    with pytest.raises(burla.SerializationError, match=r"input 1 .*lock"):
        rpm(square, [1, threading.Lock()], spinner=False)


def test_oversized_input_raises_input_too_big(on_cluster):
    with pytest.raises(burla.InputTooBig, match="input 0"):
        rpm(len, [b"x" * 2_000_000], max_input_bytes=1_000_000, spinner=False)


def test_bad_arguments_are_config_errors(on_cluster):
    with pytest.raises(burla.ConfigError, match="func_cpu"):
        rpm(square, [1], func_cpu=0)
    with pytest.raises(burla.ConfigError, match="callable"):
        rpm(3, [1])
    with pytest.raises(burla.ConfigError, match="iterable"):
        rpm(square, 5)


def test_func_cpu_beyond_any_node_is_no_compatible_nodes(on_cluster):
    with pytest.raises(burla.NoCompatibleNodes, match="func_cpu=64"):
        rpm(square, [1], func_cpu=64, spinner=False)


def test_func_timeout_bounds_one_call(on_cluster):
    import time

    with pytest.raises(burla.CallTimeout) as info:
        rpm(time.sleep, [0, 30], func_timeout=0.5, spinner=False)
    assert info.value.input_index == 1


@pytest.mark.parametrize("how", ["sigkill", "os_exit", "segfault"])
def test_worker_death_mid_input_loses_nothing_and_duplicates_nothing(on_cluster, tmp_path, how):
    marker = tmp_path / "died-once"

    def dies_once(x):
        import ctypes

        if x == 7 and not marker.exists():
            marker.write_text("x")
            if how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif how == "os_exit":
                os._exit(1)
            else:
                ctypes.string_at(0)
        return x

    out = list(rpm(dies_once, range(50), generator=True, spinner=False))
    assert sorted(out) == list(range(50))  # exactly one result per input


def test_input_that_always_kills_its_worker_raises_worker_crashed(on_cluster):
    def poison(x):
        if x == 3:
            os._exit(9)
        return x

    with pytest.raises(burla.WorkerCrashed, match="input 3") as info:
        rpm(poison, range(10), max_retries=1, spinner=False)
    assert info.value.input_index == 3 and "code 9" in str(info.value)


def test_a_sigkill_from_outside_is_not_blamed_on_memory(on_cluster):
    def shot(x):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(burla.WorkerCrashed) as info:
        rpm(shot, [0], max_retries=0, spinner=False)
    assert "SIGKILL" in str(info.value) and "kill -9 from outside burla" in str(info.value)
    assert "ran out of memory" not in str(info.value)


def test_func_ram_is_enforced(on_cluster):
    def hog(x):
        block = bytearray(600 << 20)  # 600 MiB against a 256 MiB limit
        for i in range(0, len(block), 4096):
            block[i] = 1
        import time

        time.sleep(5)
        return len(block)

    with pytest.raises(burla.WorkerCrashed, match="func_ram"):
        rpm(hog, [1], func_ram=0.25, max_retries=0, spinner=False)


def test_called_from_a_running_event_loop_like_jupyter(on_cluster):
    async def cell():
        return rpm(square, [1, 2, 3], spinner=False)

    assert asyncio.run(cell()) == [1, 4, 9]


def test_called_from_threads_concurrently(on_cluster):
    results = {}

    def go(k):
        results[k] = rpm(square, list(range(k, k + 50)), spinner=False)

    threads = [threading.Thread(target=go, args=(k,)) for k in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0] == [x * x for x in range(50)] and results[100] == [x * x for x in range(100, 150)]


def test_missing_module_on_workers_is_function_load_error(on_cluster, tmp_path):
    import sys

    import cloudpickle

    mod_dir = tmp_path / "site"
    mod_dir.mkdir()
    (mod_dir / "only_here.py").write_text("def f(x):\n    return x\n")
    sys.path.insert(0, str(mod_dir))
    try:
        import only_here

        with pytest.raises(burla.FunctionLoadError, match="only_here"), _pickle_by_reference(cloudpickle, only_here):
            rpm(only_here.f, [1], spinner=False)
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop("only_here", None)


class _pickle_by_reference:
    """Make burla treat a module as installed (pickled by reference)."""

    def __init__(self, cloudpickle, module):
        self.module = module
        from burla.client import _pickling

        self._pickling = _pickling

    def __enter__(self):
        self._old = self._pickling._is_local
        self._pickling._is_local = lambda m, roots: False
        self._pickling._scanned_count = 0

    def __exit__(self, *exc):
        self._pickling._is_local = self._old
        self._pickling._scanned_count = 0


def test_error_in_users_generator_cancels_and_reraises(on_cluster):
    def inputs():
        yield from range(5)
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        rpm(square, inputs(), spinner=False)


def test_breaking_out_of_a_result_generator_cancels_the_job(on_cluster):
    from ..conftest import http_get, wait_until

    gen = rpm(square, range(100_000), generator=True, spinner=False)
    assert next(gen) is not None
    gen.close()
    wait_until(lambda: all(n["job_id"] is None for n in http_get(on_cluster, "/v1/cluster")["nodes"]), 5,
               "the node to be freed")


def test_image_and_gpu_need_capable_nodes(on_cluster):
    with pytest.raises(burla.NoCompatibleNodes, match="containers"):
        rpm(square, [1], image="burla:0.1.0", spinner=False)
    with pytest.raises(burla.NoCompatibleNodes, match="GPU"):
        rpm(square, [1], func_gpu=1, spinner=False)
    with pytest.raises(burla.ConfigError, match="func_gpu"):
        rpm(square, [1], func_gpu=0)


def test_call_that_ignores_the_timeout_is_killed_by_the_node(on_cluster):
    def stuck(x):
        import signal
        import time

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like C code that never yields
        time.sleep(60)

    with pytest.raises(burla.WorkerCrashed, match=r"past func_timeout=0\.5s") as info:
        rpm(stuck, [1], func_timeout=0.5, max_retries=0, spinner=False)
    assert info.value.input_index == 0


def _waits_for_its_neighbour(i, where):
    """Odd inputs wait until the client has *received* the result of the even
    input before them (in the same batch): only possible if results stream."""
    import os
    import time

    if i % 2:
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(where, str(i - 1))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"result {i - 1} never reached the client while its batch ran")
            time.sleep(0.005)
    return i


def test_results_stream_before_their_batch_is_done(on_cluster, tmp_path):
    got = []
    for value in rpm(_waits_for_its_neighbour, [(i, str(tmp_path)) for i in range(10)], generator=True,
                     spinner=False):
        (tmp_path / str(value)).touch()
        got.append(value)
    assert sorted(got) == list(range(10))
