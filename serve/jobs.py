"""Where generation jobs live: a Redis store that every ingress and sampler replica reaches,
so a restart of any of them (or of Redis, from its append-only file) forgets nothing.

A job is queued -> running -> done | failed. The broker's queue (Celery on the same Redis,
`serve.app`) carries each job's id to a sampler replica; this store holds what the broker
cannot: the job's state, its place in the queue, its step i of n, its attempts, a running
job's heartbeat, and the finished job's files. Every change of state is one Lua script, so
the ingress replicas, the samplers and the reaper (`reap`) never race:

- `submit` admits a job only while fewer than `serve.max_queued` are queued or running;
- `start` moves a queued job to running once: a second message for the same job (sent again
  by `reap`, or restored by the broker) finds it running or finished and is dropped;
- `reap` puts back in the queue a running job whose sampler stopped beating for `lease_s`
  (attempts left), or fails it; and resends a job whose ingress died between admitting it and
  sending its message. Whoever's script changed the job sends the message: never two.

Results themselves are files in storage (`hoi.outputs`); a job is marked done only after
its result.json is written. Finished jobs are kept for `serve.keep_finished_s`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from hoi.config import ServeConfig

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
DEFAULT_WAIT_S = 30.0
"""Retry-After before any generation has finished (no timing to estimate from)."""
SEND_GRACE_S = 30.0
"""A queued job whose message was not sent this long after its admission lost its ingress."""
OWNER = "owner:"
"""Key of an owner's active jobs: <prefix>owner:<name>."""
RETRY = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=40)
"""A patient store's calls ride out a Redis restart of about a minute."""

# KEYS: job hash, queued zset, active set, sequence, the owner's active set. ARGV: id,
# num_steps, max_queued, owner, the owner's max_queued. Returns the position, -1 when the
# queue is full, -2 when the owner's share is.
_SUBMIT = """
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return -1 end
if redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[5]) then return -2 end
local now = redis.call('TIME')
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'queued', 'step', 0,
           'num_steps', ARGV[2], 'attempts', 0, 'seq', seq, 'sent', 0, 'owner', ARGV[4],
           'submitted', now[1] + now[2] / 1e6)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return redis.call('ZRANK', KEYS[2], ARGV[1])
"""
# KEYS: job hash, queued zset. Returns 1 when this call started the job.
_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
local now = redis.call('TIME')
now = now[1] + now[2] / 1e6
redis.call('HSET', KEYS[1], 'status', 'running', 'step', 0, 'started', now, 'beat', now)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
return 1
"""
# KEYS: job hash. ARGV: step (-1: a heartbeat only), num_steps.
_BEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'beat', now[1] + now[2] / 1e6)
if tonumber(ARGV[1]) >= 0 then redis.call('HSET', KEYS[1], 'step', ARGV[1], 'num_steps', ARGV[2]) end
return 1
"""
# KEYS: job hash, active set, queued zset, durations list. ARGV: id, status, field, value,
# keep seconds, the owners' key prefix. Returns 1 when the job was still unfinished.
_END = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
local now = redis.call('TIME')
now = now[1] + now[2] / 1e6
redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4], 'finished', now)
if ARGV[2] == 'done' then
  redis.call('HSET', KEYS[1], 'step', redis.call('HGET', KEYS[1], 'num_steps'))
  local started = redis.call('HGET', KEYS[1], 'started')
  if started then
    redis.call('LPUSH', KEYS[4], now - tonumber(started))
    redis.call('LTRIM', KEYS[4], 0, 49)
  end
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', ARGV[6] .. redis.call('HGET', KEYS[1], 'owner'), ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
# KEYS: job hash, queued zset, active set. ARGV: id, lease s, max attempts, keep s, grace s,
# the owners' key prefix.
# Returns 1: send its message again; 0: nothing to do; -1: failed (no attempts left).
_REAP = """
local job = redis.call('HMGET', KEYS[1], 'status', 'beat', 'attempts', 'seq', 'sent',
                       'submitted')
local now = redis.call('TIME')
now = now[1] + now[2] / 1e6
if job[1] == 'running' and now - tonumber(job[2]) > tonumber(ARGV[2]) then
  if tonumber(job[3]) >= tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], 'status', 'failed', 'finished', now, 'error',
               'its sampler replica stopped ' .. job[3] .. ' times')
    redis.call('SREM', KEYS[3], ARGV[1])
    redis.call('SREM', ARGV[6] .. redis.call('HGET', KEYS[1], 'owner'), ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    return -1
  end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'step', 0)
  redis.call('ZADD', KEYS[2], job[4], ARGV[1])
  return 1
end
if job[1] == 'queued' and job[5] == '0' and now - tonumber(job[6]) > tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'sent', 1)
  return 1
end
return 0
"""


class StoreUnavailable(RuntimeError):
    """Redis did not answer (after retries)."""


class JobStore:
    """The jobs of one app on the Redis of `serve.broker`, under keys prefixed by
    `serve.queue` (apps may share a Redis). Thread-safe (redis-py's pool); every method is a
    blocking call."""

    def __init__(self, serve: ServeConfig, patient: bool = True) -> None:
        """patient: calls ride out a Redis restart of about a minute (the samplers, whose
        work must not be lost); else they fail at once (the ingress, whose client gets 503 +
        Retry-After, and whose reaper must not take an outage's missed beats for dead
        samplers)."""
        self.max_queued, self.max_replicas = serve.max_queued, serve.max_replicas
        self.keep_finished_s = serve.keep_finished_s
        self.prefix = f"svimo:{serve.queue}:"
        self.redis = redis.Redis.from_url(
            serve.broker, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
            retry=RETRY if patient else Retry(NoBackoff(), 0),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self._submit = self.redis.register_script(_SUBMIT)
        self._start = self.redis.register_script(_START)
        self._beat = self.redis.register_script(_BEAT)
        self._end = self.redis.register_script(_END)
        self._reap = self.redis.register_script(_REAP)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _job_key(self, job_id: str) -> str:
        return self._key(f"job:{job_id}")

    def ping(self) -> None:
        """Raise StoreUnavailable when Redis does not answer."""
        try:
            self.redis.ping()
        except redis.RedisError as e:
            raise StoreUnavailable(str(e)) from e

    # --- the ingress ----------------------------------------------------------------------

    def submit(self, job_id: str, num_steps: int, owner: str = "",
               owner_max_queued: int | None = None) -> dict[str, Any]:
        """Admit a job of `owner` (an API key's name; "" without keys): {"position": n}, or
        {"retry_after_s": n, "full": "queue" | "owner"} when the queue, or the owner's share
        of it (`owner_max_queued` jobs queued or running), is full."""
        limit = self.max_queued if owner_max_queued is None else owner_max_queued
        position = self._submit(keys=[self._job_key(job_id), self._key("queued"),
                                      self._key("active"), self._key("seq"),
                                      self._key(OWNER + owner)],
                                args=[job_id, num_steps, self.max_queued, owner, limit])
        if position < 0:
            return {"retry_after_s": self._retry_after(),
                    "full": "queue" if position == -1 else "owner"}
        return {"position": position}

    def sent(self, job_id: str) -> None:
        """The job's message is on the broker's queue."""
        self.redis.hset(self._job_key(job_id), "sent", 1)

    def reap(self, lease_s: float, max_attempts: int) -> list[str]:
        """Jobs whose message must be sent (again): running ones whose sampler stopped beating
        for `lease_s` (put back in the queue; failed after `max_attempts`), queued ones whose
        message was never sent."""
        resend = []
        for job_id in self.redis.smembers(self._key("active")):
            if self._reap(keys=[self._job_key(job_id), self._key("queued"), self._key("active")],
                          args=[job_id, lease_s, max_attempts, self.keep_finished_s,
                                SEND_GRACE_S, self._key(OWNER)]) == 1:
                resend.append(job_id)
        return resend

    # --- the samplers -----------------------------------------------------------------------

    def start(self, job_id: str) -> bool:
        """True when this call started the job (it was queued); False for a job running on
        another replica, finished, or forgotten: its message is a duplicate."""
        return self._start(keys=[self._job_key(job_id), self._key("queued")],
                           args=[]) == 1

    def beat(self, job_id: str, step: int = -1, num_steps: int = 0) -> None:
        """The sampler is alive; with `step`, the job's progress."""
        self._beat(keys=[self._job_key(job_id)], args=[step, num_steps])

    def finish(self, job_id: str, files: list[str]) -> bool:
        return self._finish(job_id, DONE, "files", json.dumps(files))

    def fail(self, job_id: str, error: str) -> bool:
        return self._finish(job_id, FAILED, "error", error)

    def _finish(self, job_id: str, status: str, field: str, value: str) -> bool:
        return self._end(keys=[self._job_key(job_id), self._key("active"), self._key("queued"),
                               self._key("durations")],
                         args=[job_id, status, field, value, self.keep_finished_s,
                               self._key(OWNER)]) == 1

    # --- answers ------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job as the status route shows it, or None when unknown (or long finished)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._job_key(job_id))
            pipe.zrank(self._key("queued"), job_id)
            job, position = pipe.execute()
        if not job:
            return None
        return {"id": job_id, "status": job["status"], "position": position,
                "step": int(job["step"]), "num_steps": int(job["num_steps"]),
                "attempts": int(job["attempts"]), "error": job.get("error"),
                "files": json.loads(job.get("files", "[]")), "owner": job.get("owner", "")}

    def counts(self) -> dict[str, int]:
        """Jobs queued and running."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self._key("queued"))
            pipe.scard(self._key("active"))
            queued, active = pipe.execute()
        return {QUEUED: queued, RUNNING: active - queued}

    def _retry_after(self) -> int:
        durations = [float(d) for d in self.redis.lrange(self._key("durations"), 0, -1)]
        if not durations:
            return int(DEFAULT_WAIT_S)
        mean = sum(durations) / len(durations)
        # the earliest a slot frees up: one generation per replica finishing
        return max(1, math.ceil(mean / self.max_replicas))
