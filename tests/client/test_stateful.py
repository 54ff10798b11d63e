"""Stateful workers: a callable class built once per worker (issue 12, item 5)."""

import os

import pytest

import burla
from burla import remote_parallel_map as rpm


class Model:
    """Stands for a model that is slow to load: built once per worker."""

    def __init__(self, scale, marks=None):
        self.scale, self.calls = scale, 0
        if marks:
            open(os.path.join(marks, f"{os.getpid()}-{id(self)}"), "w").close()

    def __call__(self, x):
        self.calls += 1
        return os.getpid(), id(self), x * self.scale, self.calls


class Broken:
    def __init__(self):
        raise ValueError("no weights here")

    def __call__(self, x):
        return x


def test_each_worker_builds_one_instance_and_calls_it_for_every_input(on_cluster, tmp_path):
    out = rpm(Model, range(60), init_args=(3,), init_kwargs={"marks": str(tmp_path)}, spinner=False)
    assert [value for _, _, value, _ in out] == [3 * x for x in range(60)]
    instances = {(pid, obj) for pid, obj, _, _ in out}
    assert len({pid for pid, _ in instances}) == len(instances)  # one instance per worker process
    assert len(os.listdir(tmp_path)) == len(instances)  # each built once
    for pid, obj in instances:  # and reused: its call count goes up by one per input it ran
        counts = sorted(c for p, o, _, c in out if (p, o) == (pid, obj))
        assert counts == list(range(1, len(counts) + 1))


def test_a_constructor_error_fails_the_job_once_naming_the_class(on_cluster):
    with pytest.raises(burla.FunctionLoadError) as info:
        rpm(Broken, range(10), spinner=False)
    text = str(info.value)
    assert "Broken(*init_args, **init_kwargs) failed on a worker: ValueError: no weights here" in text
    assert text.count("Traceback") == 1 and "__init__" in text


def test_classes_without_call_stay_plain_callables_and_init_args_need_a_callable_class(on_cluster):
    assert rpm(int, ["1", "22"], spinner=False) == [1, 22]  # int(...) per input, as before
    with pytest.raises(burla.ConfigError, match="defines __call__"):
        rpm(abs, [1], init_args=(1,))
    with pytest.raises(burla.ConfigError, match="init_args must be a tuple"):
        rpm(Model, [1], init_args=[1])
