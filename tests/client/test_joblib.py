"""The joblib backend on a real cluster, with real joblib and scikit-learn (issue 12, item 2)."""

from __future__ import annotations

import multiprocessing
import os
import time

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed

import burla
import burla.joblib
from burla.joblib import BurlaBackend
from tests.conftest import http_get, wait_until


@pytest.fixture(autouse=True)
def registered() -> None:
    burla.joblib.register()


def square(x):
    return x * x, os.getpid()


def fails_on(x, bad):
    if x == bad:
        raise KeyError(f"no row {x}")
    time.sleep(0.05)
    return x


def inner_sum(n):
    return sum(Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(n)))


def test_parallel_runs_on_the_cluster_with_n_jobs_minus_one_meaning_its_slots(on_cluster):
    assert BurlaBackend().effective_n_jobs(-1) == 2  # the shared cluster: one node, two workers
    assert BurlaBackend().effective_n_jobs(-2) == 1
    with joblib.parallel_backend("burla", n_jobs=-1):
        out = Parallel()(delayed(square)(i) for i in range(200))
    assert [v for v, _ in out] == [i * i for i in range(200)]
    assert os.getpid() not in {pid for _, pid in out}


def test_parallel_defaults_are_joblibs_own(on_cluster):
    def pids(parallel: Parallel) -> set[int]:
        return {pid for _, pid in parallel(delayed(square)(i) for i in range(3))}

    with joblib.parallel_backend("burla"):  # whose n_jobs defaults to -1: the cluster
        assert os.getpid() not in pids(Parallel())
        assert pids(Parallel(n_jobs=1)) == {os.getpid()}  # one job: in this process, as with loky
    with joblib.parallel_config(backend="burla"):  # whose n_jobs defaults to None: Parallel()'s 1
        assert pids(Parallel()) == {os.getpid()}


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generators_stream_results(on_cluster, return_as):
    with joblib.parallel_backend("burla", n_jobs=-1):
        gen = Parallel(return_as=return_as)(delayed(square)(i) for i in range(20))
        got = [v for v, _ in gen]
    assert got == [i * i for i in range(20)] if return_as == "generator" else sorted(got) == sorted(
        i * i for i in range(20))


def test_a_task_error_raises_its_own_type_aborts_the_rest_and_the_backend_is_usable_after(on_cluster):
    with joblib.parallel_backend("burla", n_jobs=-1):
        t0 = time.monotonic()
        with pytest.raises(KeyError, match="no row 3"):
            Parallel(batch_size=1)(delayed(fails_on)(i, 3) for i in range(400))
        assert time.monotonic() - t0 < 10  # not the 400 x 50 ms the rest would take on 2 workers
        wait_until(lambda: all(n["job_id"] is None for n in http_get(on_cluster, "/v1/cluster")["nodes"]), 10,
                   "the aborted tasks to be canceled on the cluster")
        assert Parallel()(delayed(fails_on)(i, -1) for i in range(5)) == list(range(5))


def test_nested_parallel_in_a_task_uses_threads_on_its_worker(on_cluster):
    with joblib.parallel_backend("burla", n_jobs=-1):
        assert Parallel()(delayed(inner_sum)(n) for n in (3, 10)) == [3, 45]


def test_bad_backend_options_name_the_ones_it_takes():
    with pytest.raises(TypeError, match=r"does not take colour.*func_cpu"):
        BurlaBackend(colour="red")


def test_scikit_learn_grid_search_and_cross_val_score_give_exactly_the_serial_results(on_cluster):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1, 10], "gamma": ["scale", 0.1]}
    serial_scores = cross_val_score(SVC(), X, y, cv=5, n_jobs=1)
    serial_search = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    with joblib.parallel_backend("burla"):
        scores = cross_val_score(SVC(), X, y, cv=5, n_jobs=-1)
        search = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(X, y)
    assert np.array_equal(scores, serial_scores)
    assert search.best_params_ == serial_search.best_params_
    for key in ("mean_test_score", "std_test_score", "rank_test_score", "params"):
        assert list(search.cv_results_[key]) == list(serial_search.cv_results_[key]), key


def test_a_timeout_raises_and_cancels_the_calls_left(on_cluster):
    with joblib.parallel_backend("burla", n_jobs=-1), pytest.raises(multiprocessing.TimeoutError):  # (as for loky)
        Parallel(timeout=0.5)(delayed(time.sleep)(30) for _ in range(4))
    wait_until(lambda: all(n["job_id"] is None for n in http_get(on_cluster, "/v1/cluster")["nodes"]), 10,
               "the timed-out calls to be canceled on the cluster")
