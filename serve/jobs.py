"""Where generation jobs live while they run: one `JobStore` replica that every ingress and
sampler replica reaches through its handle.

A job is queued -> running -> done | failed. The store bounds the work it accepts
(`serve.max_queued` queued + running) and estimates how long a refused client should wait.
Results themselves are files in storage (`hoi.outputs`); a job is marked done only after
its result.json is written.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from ray import serve

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
DEFAULT_WAIT_S = 30.0
"""Retry-After before any generation has finished (no timing to estimate from)."""
KEEP_FINISHED = 10_000
"""Finished jobs whose status the store still answers for."""


@dataclass
class Job:
    id: str
    status: str = QUEUED
    step: int = 0
    num_steps: int = 0
    attempts: int = 0
    error: str | None = None
    files: list[str] = field(default_factory=list)
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=1000)
class JobStore:
    """The jobs of this app. Methods are coroutines without awaits, so each runs whole on
    the replica's event loop: no locks needed."""

    def __init__(self, max_queued: int, max_replicas: int) -> None:
        self.max_queued, self.max_replicas = max_queued, max_replicas
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.durations: list[float] = []

    async def submit(self, job_id: str, num_steps: int) -> dict[str, int]:
        """Queue a job: {"position": n}, or {"retry_after_s": n} when the queue is full."""
        active = self._active()
        if len(active) >= self.max_queued:
            return {"retry_after_s": self._retry_after(len(active))}
        self._forget_oldest()
        self.jobs[job_id] = Job(job_id, num_steps=num_steps)
        return {"position": self._position(job_id)}

    async def start(self, job_id: str) -> None:
        job = self.jobs[job_id]
        job.status, job.step, job.started = RUNNING, 0, time.time()
        job.attempts += 1

    async def progress(self, job_id: str, step: int, num_steps: int) -> None:
        job = self.jobs[job_id]
        if job.status == RUNNING:
            job.step, job.num_steps = step, num_steps

    async def requeue(self, job_id: str) -> None:
        """Back to the queue after its sampler replica died."""
        job = self.jobs[job_id]
        job.status, job.step = QUEUED, 0

    async def finish(self, job_id: str, files: list[str]) -> None:
        job = self.jobs[job_id]
        job.status, job.files, job.finished = DONE, files, time.time()
        job.step = job.num_steps
        if job.started is not None:
            self.durations = [*self.durations[-49:], job.finished - job.started]

    async def fail(self, job_id: str, error: str) -> None:
        job = self.jobs[job_id]
        job.status, job.error, job.finished = FAILED, error, time.time()

    async def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return {**asdict(job), "position": self._position(job_id)}

    async def unfinished(self) -> list[str]:
        """Jobs queued or running, oldest first."""
        return [j.id for j in self._active()]

    async def counts(self) -> dict[str, int]:
        statuses = [j.status for j in self.jobs.values()]
        return {s: statuses.count(s) for s in (QUEUED, RUNNING, DONE, FAILED)}

    def _forget_oldest(self) -> None:
        """Keep at most KEEP_FINISHED finished jobs (their files stay in storage)."""
        finished = [j.id for j in self.jobs.values() if j.status in (DONE, FAILED)]
        for job_id in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[job_id]

    def _active(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.status in (QUEUED, RUNNING)]

    def _position(self, job_id: str) -> int | None:
        """0 for the next job to start; None once it has started."""
        queued = [j.id for j in self.jobs.values() if j.status == QUEUED]
        return queued.index(job_id) if job_id in queued else None

    def _retry_after(self, active: int) -> int:
        if not self.durations:
            return int(DEFAULT_WAIT_S)
        mean = sum(self.durations) / len(self.durations)
        # the earliest a slot frees up: one generation per replica finishing
        return max(1, math.ceil(mean * max(1, active - self.max_queued + 1)
                                / self.max_replicas))
