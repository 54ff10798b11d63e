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
    def __init__(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.cls, self.args, self.kwargs = cls, args, kwargs
        self.__name__, self.__qualname__ = cls.__name__, cls.__qualname__  # the job is named after the class

    @property
    def name(self) -> str:
        return self.__qualname__

    def build(self) -> Any:
        return self.cls(*self.args, **self.kwargs)


def is_callable_class(obj: object) -> bool:
    return isinstance(obj, type) and "__call__" in _defined(obj)


def _defined(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:  # not object's (type's __call__ is not an instance's)
        names.update(vars(klass))
    return names
