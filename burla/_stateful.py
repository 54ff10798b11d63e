"""Stateful workers: a class whose instances are callable, built once per worker.

``remote_parallel_map(Model, inputs, init_args=..., init_kwargs=...)`` ships
a ``CallableClass``; each worker builds ``Model(*init_args, **init_kwargs)``
once, when the job starts there, then calls the instance on every input it
runs (Ray Data's callable-class pattern: load a model once per worker, not
once per input).  Pure stdlib: workers in a user's image import it.
"""

from __future__ import annotations

from typing import Any


class CallableClass:
    def __init__(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], label: str = "") -> None:
        self.cls, self.args, self.kwargs = cls, args, kwargs
        self.__name__, self.__qualname__ = cls.__name__, cls.__qualname__  # the job is named after the class
        # what a construction error names: "<label> failed on a worker: ..."
        self.label = label or f"{cls.__qualname__}(*init_args, **init_kwargs)"

    def build(self) -> Any:
        return self.cls(*self.args, **self.kwargs)


def is_callable_class(obj: object) -> bool:
    """A class that defines ``__call__`` for its instances (object's, the last in the MRO, does not count)."""
    return isinstance(obj, type) and any("__call__" in vars(klass) for klass in obj.__mro__[:-1])
