"""The function of a ``burla.Executor``'s job, on the workers.

Each input is one submitted call, ``(fn, args, kwargs)``, or a chunk of
``Executor.map`` calls, ``(fn, [args, ...], None)``.  The job's function is
``ExecutorCalls``, built once per worker (a stateful worker): its
constructor runs the executor's ``initializer``.

A function pickled by value (defined in ``__main__``, a notebook, or a
module next to the script) arrives with a fresh copy of its globals in
every pickle: an initializer that sets a global would set it in a dict no
later call reads.  So each worker keeps one globals dict per such module,
for the job's life, and runs every by-value function of that module on it --
the initializer's writes are what the calls read, as in a process pool,
where the workers import the module once.  Pure stdlib: workers in a user's
image import it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


class ExecutorCalls:
    def __init__(self, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
        self._globals: dict[str, dict[str, Any]] = {}  # module name -> the globals its by-value functions share
        if initializer is not None:
            self._adopt(initializer)(*initargs)

    def __call__(self, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any] | None) -> Any:
        fn = self._adopt(fn)
        if kwargs is None:  # a chunk of Executor.map's calls
            return [fn(*one) for one in args]
        return fn(*args, **kwargs)

    def _adopt(self, fn: Any) -> Any:
        """``fn``, running on its module's shared globals if it came by value."""
        if type(fn) is not types.FunctionType:
            return fn  # builtins, bound methods, partials: as they are
        g = fn.__globals__
        name = g.get("__name__", fn.__module__)
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__dict__", None) is g:
            return fn  # imported by reference: already its module's own globals
        shared = self._globals.setdefault(name, g)
        if shared is g:
            return fn
        for key, value in g.items():
            if key not in shared:  # what the module already holds here (the initializer's writes) stays
                shared[key] = _rebound(value, g, shared)
        return _rebound(fn, g, shared)


def _rebound(value: Any, old: dict[str, Any], new: dict[str, Any]) -> Any:
    if type(value) is not types.FunctionType or value.__globals__ is not old:
        return value
    f = types.FunctionType(value.__code__, new, value.__name__, value.__defaults__, value.__closure__)
    f.__kwdefaults__ = value.__kwdefaults__
    f.__qualname__, f.__module__, f.__doc__ = value.__qualname__, value.__module__, value.__doc__
    f.__annotations__ = value.__annotations__
    f.__dict__.update(value.__dict__)
    return f
