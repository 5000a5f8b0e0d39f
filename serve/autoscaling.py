"""How many sampler replicas: Ray Serve's asynchronous-inference policy, with the workload
read from the job store.

Ray's `AsyncInferenceAutoscalingPolicy` asks the broker how many messages wait in its queue.
A message leaves that queue when a replica takes it, so a job being generated would count
for nothing, and a replica minutes into a generation could be scaled away as idle. Here the
workload is the store's jobs queued + running (`JobStore.counts`); the rest (one-shot polls,
`target_ongoing_requests` jobs per replica, one replica from zero as soon as a job waits) is
Ray's.
"""

from __future__ import annotations

import asyncio
import logging

import redis
from ray.serve.async_inference_autoscaling_policy import AsyncInferenceAutoscalingPolicy

from hoi.config import ServeConfig
from serve.jobs import QUEUED, RUNNING, JobStore

log = logging.getLogger(__name__)


class JobsAutoscalingPolicy(AsyncInferenceAutoscalingPolicy):
    """Serve builds it in its controller from `policy_kwargs`: the app's serve config."""

    def __init__(self, **serve: object) -> None:
        self.serve = ServeConfig(**serve)
        super().__init__(self.serve.broker, self.serve.queue,
                         poll_interval_s=self.serve.queue_poll_s)
        self.store: JobStore | None = None

    def _ensure_broker(self) -> None:
        if self.store is None:
            self.store = JobStore(self.serve)

    async def _poll_once(self) -> None:
        try:
            counts = await asyncio.to_thread(self.store.counts)
        except redis.RedisError as e:  # keep the last count until Redis answers again
            log.warning("job store unreachable, replicas kept for %d jobs: %s",
                        self._queue_length, e)
            return
        self._queue_length = counts[QUEUED] + counts[RUNNING]
