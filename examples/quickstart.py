"""Runs on the embedded local cluster: no set-up, no cluster to start."""

import sys

from burla import remote_parallel_map


def my_function(x):
    print(f"[#{x}] running on a burla worker")
    return x * x


if __name__ == "__main__":
    results = remote_parallel_map(my_function, list(range(20)))
    print("squares:", results)
    sys.exit(0 if results == [x * x for x in range(20)] else 1)
