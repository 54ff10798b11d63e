"""The Redis backend (``queue: {type: redis, url: redis://HOST:PORT/DB}``), Redis >= 7.0.

Keys of job J of cluster C (one hash slot, ``{J}``, so a Redis Cluster
keeps a job on one shard; C lets clusters share a Redis):

- ``burla:C:{J}:meta``    hash: ``spec`` (the encoded SubmitJob), ``total``, ``acked``
  (results the client acknowledged), ``ended`` (the encoded JobEnded, once it ended)
- ``burla:C:{J}:inputs``  hash: input batch start -> encoded InputBatch
- ``burla:C:{J}:sizes``   hash: input batch start -> inputs in it
- ``burla:C:{J}:starts``  sorted set of those starts (to find a result's batch)
- ``burla:C:{J}:done``    bitmap: bit i set once input i has a stored result
- ``burla:C:{J}:attempts`` hash: input index -> crashes charged
- ``burla:C:{J}:results`` list: encoded ResultBatch not acknowledged, oldest first
- ``burla:C:{J}:writes`` hash: result start -> id of the write that stored it (a write
  re-sent after its reply was lost is told True again, not refused as a duplicate)
- ``burla:C:jobs``        set of job ids

Each step is one command, a MULTI transaction or one Lua script, so it is
atomic; ``store_result`` is a script: check, mark done, keep, tidy.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ..._errors import QueueUnavailable
from . import Blob, Step, StoredJob

_STORE_RESULT = """
local meta, done, results, inputs, sizes, starts, writes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local first, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = first + n - 1
if n < 1 or redis.call('EXISTS', meta) == 0 then return 0 end
if redis.call('BITCOUNT', done, first, last, 'BIT') > 0 then
  -- done already: a duplicate, unless it is this very write sent again (its reply was lost)
  if ARGV[4] == '' or redis.call('HGET', writes, first) ~= ARGV[4] then return 0 end
else
  for i = first, last do redis.call('SETBIT', done, i, 1) end
  redis.call('RPUSH', results, ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', writes, first, ARGV[4]) end
end
local found = redis.call('ZREVRANGEBYSCORE', starts, first, '-inf', 'LIMIT', 0, 1)
for _, s in ipairs(redis.call('ZRANGEBYSCORE', starts, '(' .. first, last)) do table.insert(found, s) end
for _, s in ipairs(found) do
  local size = tonumber(redis.call('HGET', sizes, s))
  local lo = tonumber(s)
  if size and redis.call('BITCOUNT', done, lo, lo + size - 1, 'BIT') == size then
    redis.call('HDEL', inputs, s)
    redis.call('HDEL', sizes, s)
    redis.call('ZREM', starts, s)
  end
end
return 1
"""


SOCKET_TIMEOUT = 5.0  # seconds one reply may take (a hung Redis must not hang the head)

_ACK = """
local acked = tonumber(redis.call('HGET', KEYS[1], 'acked') or '0')
local upto = tonumber(ARGV[1])
if upto > acked then
  redis.call('LPOP', KEYS[2], upto - acked)
  redis.call('HSET', KEYS[1], 'acked', upto)
end
return 1
"""


P = ParamSpec("P")
T = TypeVar("T")


def _reached(step: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis not answering (after redis-py's own retries) is ``QueueUnavailable``."""

    @functools.wraps(step)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            return await step(*args, **kwargs)
        except (ConnectionError, TimeoutError) as e:
            raise QueueUnavailable(f"Redis at {getattr(args[0], 'where', '?')}: {e}") from None

    return wrapper


class RedisBackend:
    durable = True

    def __init__(self, url: str, cluster: str = "burla"):
        self.url = url
        self.where = re.sub(r"//[^@/]*@", "//***@", url)  # the password stays out of APIs and logs
        self.prefix = f"burla:{cluster}:"
        self._jobs = f"{self.prefix}jobs"
        self._redis: Any = None
        self._store: Any = None

    def _keys(self, job_id: str, *names: str) -> list[str]:
        return [f"{self.prefix}{{{job_id}}}:{n}" for n in names]

    async def open(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as e:
            raise QueueUnavailable("queue: {type: redis} needs the redis package: pip install 'burla[redis]'") from e
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError, TimeoutError

        # every step is idempotent: a step whose reply was lost is simply sent again
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=False, retry=Retry(
            ExponentialBackoff(cap=1.0, base=0.05), 8), retry_on_error=[ConnectionError, TimeoutError],
            socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
        probe = aioredis.Redis.from_url(self.url, retry=Retry(ExponentialBackoff(), 0),
                                        socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
        try:  # once, at start: a head pointed at no Redis says so at once
            info = await probe.info("server")
        except Exception as e:
            await self._redis.aclose()
            raise QueueUnavailable(f"cannot reach Redis at {self.where}: {e}") from None
        finally:
            await probe.aclose()
        if int(str(info.get("redis_version", "0")).split(".")[0]) < 7:
            await self._redis.aclose()
            raise QueueUnavailable(f"Redis at {self.where} is {info.get('redis_version')}; burla needs Redis >= 7.0")
        self._store = self._redis.register_script(_STORE_RESULT)
        self._ack = self._redis.register_script(_ACK)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # Each write step queues its commands on a MULTI/EXEC pipeline ``p`` (``_q_*``); one step is
    # one round trip, and ``write`` sends many steps in one.  ``_q_*`` return the index of the
    # command whose reply is the step's answer (store_result's), else None.

    async def _q_create_job(self, p: Any, job_id: str, spec: bytes) -> int | None:
        (meta,) = self._keys(job_id, "meta")
        p.hsetnx(meta, "spec", spec)
        p.hsetnx(meta, "total", -1)
        p.hsetnx(meta, "ended", b"")
        p.sadd(self._jobs, job_id)
        return None

    async def _q_add_inputs(self, p: Any, job_id: str, start: int, size: int, batch: Blob) -> int | None:
        inputs, sizes, starts = self._keys(job_id, "inputs", "sizes", "starts")
        p.hset(inputs, str(start), _sendable(batch))
        p.hset(sizes, str(start), size)
        p.zadd(starts, {str(start): start})
        return None

    async def _q_inputs_done(self, p: Any, job_id: str, total: int) -> int | None:
        p.hset(self._keys(job_id, "meta")[0], "total", total)
        return None

    async def _q_store_result(self, p: Any, job_id: str, start: int, n: int, result: Blob,
                              write_id: str = "") -> int | None:
        keys = self._keys(job_id, "meta", "done", "results", "inputs", "sizes", "starts", "writes")
        await self._store(keys=keys, args=[start, n, _sendable(result), write_id], client=p)
        return len(p.command_stack) - 1

    async def _q_set_attempts(self, p: Any, job_id: str, index: int, attempts: int) -> int | None:
        p.hset(self._keys(job_id, "attempts")[0], str(index), attempts)
        return None

    async def _q_results_acked(self, p: Any, job_id: str, upto: int) -> int | None:
        await self._ack(keys=self._keys(job_id, "meta", "results"), args=[upto], client=p)
        return None

    async def _q_end_job(self, p: Any, job_id: str, ended: Blob) -> int | None:
        meta, inputs, sizes, starts = self._keys(job_id, "meta", "inputs", "sizes", "starts")
        p.hset(meta, "ended", _sendable(ended))
        p.delete(inputs, sizes, starts)
        return None

    async def _q_delete_job(self, p: Any, job_id: str) -> int | None:
        keys = self._keys(job_id, "meta", "inputs", "sizes", "starts", "done", "attempts", "results", "writes")
        p.delete(*keys)
        p.srem(self._jobs, job_id)
        return None

    @_reached
    async def write(self, steps: list[Step]) -> list[bool]:
        from redis.exceptions import NoScriptError

        try:
            return await self._write(steps)
        except NoScriptError:
            # Redis restarted under redis-py's retry, which re-ran the pipeline without loading
            # the scripts again: a new pipeline loads them (every step is idempotent).
            return await self._write(steps)

    async def _write(self, steps: list[Step]) -> list[bool]:
        async with self._redis.pipeline(transaction=True) as p:
            marks = [await getattr(self, f"_q_{step.name}")(p, *step.args) for step in steps]
            replies = await p.execute()
        return [bool(replies[m]) if m is not None else True for m in marks]

    async def _one(self, name: str, *args: Any) -> bool:
        return (await self.write([Step(name, args)]))[0]

    async def create_job(self, job_id: str, spec: bytes) -> None:
        await self._one("create_job", job_id, spec)

    async def add_inputs(self, job_id: str, start: int, size: int, batch: Blob) -> None:
        await self._one("add_inputs", job_id, start, size, batch)

    async def inputs_done(self, job_id: str, total: int) -> None:
        await self._one("inputs_done", job_id, total)

    async def store_result(self, job_id: str, start: int, n: int, result: Blob, write_id: str = "") -> bool:
        return await self._one("store_result", job_id, start, n, result, write_id)

    async def set_attempts(self, job_id: str, index: int, attempts: int) -> None:
        await self._one("set_attempts", job_id, index, attempts)

    async def results_acked(self, job_id: str, upto: int) -> None:
        await self._one("results_acked", job_id, upto)

    async def end_job(self, job_id: str, ended: Blob) -> None:
        await self._one("end_job", job_id, ended)

    async def delete_job(self, job_id: str) -> None:
        await self._one("delete_job", job_id)

    @_reached
    async def job_ids(self) -> list[str]:
        return sorted(j.decode() for j in await self._redis.smembers(self._jobs))

    @_reached
    async def load(self, job_id: str) -> StoredJob | None:
        meta, inputs, done, attempts, results = self._keys(job_id, "meta", "inputs", "done", "attempts", "results")
        async with self._redis.pipeline(transaction=True) as p:
            p.hgetall(meta)
            p.hgetall(inputs)
            p.get(done)
            p.hgetall(attempts)
            p.lrange(results, 0, -1)
            m, ins, bits, att, res = await p.execute()
        if not m:
            return None
        return StoredJob(job_id, m[b"spec"], {int(k): v for k, v in ins.items()},
                         {int(k): int(v) for k, v in att.items()}, list(res),
                         int(m.get(b"acked", 0)), bits or b"", int(m.get(b"total", -1)),
                         m.get(b"ended", b""))


def _sendable(blob: Blob) -> bytes | memoryview:
    return bytes(blob) if isinstance(blob, bytearray) else blob  # redis-py takes bytes and memoryview
