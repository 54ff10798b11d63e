"""Inputs and results that cannot travel fail alone, at once, with a message that names them
(issue 11): never an endless retry of the batch they came in."""

import os

import pytest

import burla
from burla import remote_parallel_map as rpm


def _explode(message):
    raise ValueError(message)


class Unloadable:
    """Pickles on the client; unpickling it on the worker raises."""

    def __reduce__(self):
        return (_explode, ("this input cannot be rebuilt here",))


class KillsItsLoader:
    """Unpickling it ends the worker process."""

    def __reduce__(self):
        return (os._exit, (3,))


def same(x):
    return x


KILLER = KillsItsLoader()


def needs_the_killer(x):
    return KILLER and x  # unpickling this function (its global KILLER) ends the worker


def huge(_):
    return b"x" * (1100 << 20)  # over the 1 GiB a message may carry


def test_an_input_that_cannot_be_unpickled_fails_alone(on_cluster):
    out = rpm(same, [1, Unloadable(), 3], raise_errors=False, spinner=False)
    assert out[0] == 1 and out[2] == 3
    assert isinstance(out[1], burla.SerializationError) and "input 1 could not be unpickled" in str(out[1])
    with pytest.raises(burla.SerializationError, match="cannot be rebuilt here"):
        rpm(same, [Unloadable()], spinner=False)


def test_an_input_whose_unpickling_kills_the_worker_is_charged_its_retries(on_cluster):
    with pytest.raises(burla.WorkerCrashed) as info:
        rpm(same, [0, 1, KillsItsLoader(), 3], max_retries=1, spinner=False)
    assert info.value.input_index == 2


def test_a_result_too_big_for_one_message_is_an_error_not_a_retry(on_cluster):
    with pytest.raises(burla.ResultTooBig, match=r"result of input 0 pickles to 1100 MiB, over the 1008 MiB"):
        rpm(huge, [0], spinner=False)


def test_a_function_whose_unpickling_kills_its_workers_fails_the_job(on_cluster):
    with pytest.raises(burla.WorkerCrashed, match=r"5 workers of this job died in a row while unpickling the function"):
        rpm(needs_the_killer, [1, 2, 3], spinner=False)
