"""The `svimo` Ray Serve application: an HTTP API and web page in front of autoscaled sampler
replicas, with the queue and every job's state on Redis (`serve.broker`).

    redis-server --appendonly yes --dir outputs/redis --daemonize yes
    serve run serve.app:svimo                                  # configs/default.yaml
    serve run serve.app:svimo config=my.yaml serve.model=s3://bucket/runs/svimo
    serve deploy serve/svimo.yaml                              # the same, as a Serve config

Ray Serve's asynchronous inference carries the jobs: the ingress admits a job in the
`JobStore` (`serve.jobs`) and sends its id to the broker's queue (Celery on the same Redis);
the sampler replicas are task consumers (`ray.serve.task_consumer`) that take one job at a
time, and they autoscale on the jobs queued + running (`serve.autoscaling`).

Deployments:
- `SViMoAPI` (FastAPI ingress, any number of replicas): validates submissions, stores each
  request next to its results, admits and sends it; answers status and files; serves the page
  at `/`; reaps jobs whose sampler or ingress died (`JobStore.reap`).
- `SamplingReplica`: one `SViMoPipeline` per replica, one generation at a time; between
  serve.min_replicas (0 allowed) and serve.max_replicas (GPU replicas on GPU clusters). Writes
  each generation's files to <serve.results>/<id>/ and its state to the store.

Generation takes minutes at full scale, so a submission answers at once with an id (202);
clients poll `/v1/generations/{id}`. Bad input is a 4xx that says what to fix; a full queue
is 429 with Retry-After; an unreachable Redis is 503.

(No `from __future__ import annotations` here: FastAPI reads the routes' annotations.)
"""

import asyncio
import dataclasses
import io
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import ray
import redis
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from ray import serve
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig
from ray.serve.task_consumer import instantiate_adapter_from_config, task_consumer, task_handler

from cluster.runtime import PROJECT_ROOT
from hoi import resources
from hoi.artifacts import find_model, model_config
from hoi.config import Config, ServeConfig, load_config
from hoi.model.encoders import load_tokenizer
from hoi.outputs import content_type, write_generation
from hoi.pipeline import InputError, SViMoPipeline, check_prompt, model_modes
from hoi.resources import Reservation, accelerator
from hoi.storage import absolute, is_s3, join, read_bytes, read_text, write_bytes, write_text
from serve import keys, uploads
from serve.autoscaling import JobsAutoscalingPolicy
from serve.jobs import DONE, FAILED, JobStore, StoreUnavailable

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
FIELDS = ("image", "prompt", "num_steps", "seed", "guidance", "mode", "motion", "video", "K")
MOTION_NAME, VIDEO_NAME = "input_motion.npz", "input_video.mp4"
"""A request's motion (motion_to_video, as an .npz whatever was uploaded) and video
(video_to_motion), next to its image."""
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 100.0
FORM_OVERHEAD = 64 * 1024
"""Bytes a multipart body may hold beyond its files (boundaries, headers, small fields)."""
SAMPLER_ATTEMPTS = 2
"""A job whose sampler replica dies is run again once, then reported failed."""
EVENTS_EVERY_S = 0.25
"""How often an events stream reads its job."""
EVENTS_KEEPALIVE_S = 15.0
ENDED = (DONE, FAILED)
GENERATE = "generate"
"""The task name of a generation on the broker's queue; its one argument is the job id."""
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
REQUEST_NAME = "request.json"
"""Each job's fields, next to its uploaded image and (once done) its results."""

BEARER = HTTPBearer(auto_error=False, description="An API key, where the app has them "
                                                  "(serve.api_keys)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
ANYONE = keys.Key("", None)
"""The caller of an app without keys."""

api = FastAPI(title="SViMo", version="0.1.0",
              description="Generate the video and 3D hand-object motion of a prompt from a "
                          "reference image. Submit, follow the status (or its events), fetch the "
                          "files.")


# `serve.ingress` freezes a copy of `api` when it decorates the class: middleware and mounts
# must be declared before it. The deployment class itself reaches its replicas pickled by
# value (module state it writes is its own copy), so the body limit travels in the ingress
# replica's environment (`build_app`).
MAX_BODY_ENV = "SVIMO_MAX_BODY"


def max_body(s: ServeConfig) -> int:
    """The largest submission: an image, and a motion or a video, and the form around them."""
    return s.max_image_bytes + max(s.max_motion_bytes, s.max_video_bytes) + FORM_OVERHEAD


@api.middleware("http")
async def limit_body(request: Request, call_next):
    """Refuse a submission whose body is larger than its files may be, before reading it."""
    if request.method == "POST":
        length = request.headers.get("content-length")
        limit = int(os.environ.get(MAX_BODY_ENV, max_body(ServeConfig())))
        if length is None:
            return JSONResponse({"detail": "send a Content-Length header"}, status_code=411)
        if not length.isdigit():
            return JSONResponse({"detail": "bad Content-Length"}, status_code=400)
        if int(length) > limit:
            return JSONResponse({"detail": f"the request has {length} bytes; the limit is "
                                           f"{limit}"}, status_code=413)
    return await call_next(request)


api.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")


# ---------------------------------------------------------------------------------------------
# Sampler replicas
# ---------------------------------------------------------------------------------------------


def task_processor(s: ServeConfig) -> TaskProcessorConfig:
    """Celery on the Redis of serve.broker: the ingress sends to it, the samplers consume.

    A sampler holds one message at a time (prefetch 1) and acknowledges it when the job has
    ended, so a replica never hoards queued jobs. No Celery retries: a job that raised is
    failed with its reason (`SamplingReplica.generate`), and one whose sampler died is queued
    again by the reaper. The broker's own redelivery of unacknowledged messages, after its
    visibility timeout (twice the lease), only backs that up: `JobStore.start` drops a message
    whose job runs or has ended."""
    return TaskProcessorConfig(
        queue_name=s.queue, max_retries=0,
        adapter_config=CeleryAdapterConfig(
            broker_url=s.broker, backend_url=s.broker,
            app_custom_config={"worker_prefetch_multiplier": 1,
                               "broker_connection_retry_on_startup": True,
                               "result_expires": s.keep_finished_s},
            broker_transport_options={"visibility_timeout": int(2 * s.lease_s) + 1}))


class SamplingReplica:
    """One pipeline; takes one job at a time from the broker's queue (a Celery consumer
    thread, `task_consumer` in `build_app`) and writes its files and state."""

    def __init__(self, model_dir: str, cfg: Config) -> None:
        self.cfg = cfg
        self.store = JobStore(cfg.serve)
        self.store.ping()
        self.pipe = SViMoPipeline.from_pretrained(model_dir, cfg.storage)

    @task_handler(name=GENERATE)
    def generate(self, job_id: str) -> None:
        """Run job `job_id` unless it already runs elsewhere or has ended (a duplicate
        message), beating while it runs; record how it ended. Recording here rather than in
        the ingress keeps a finished job finished whatever happened to the ingress."""
        if not self.store.start(job_id):
            log.info("job %s runs elsewhere or has ended: message dropped", job_id)
            return
        ended = threading.Event()
        beating = threading.Thread(target=self._beat, args=(job_id, ended), daemon=True)
        beating.start()
        try:
            self._generate(job_id)
        except (redis.RedisError, OSError):
            # the store or the storage failed: the job stays running, its beat stops and the
            # reaper queues it again
            log.exception("job %s: interrupted", job_id)
            raise
        except Exception as e:  # noqa: BLE001 (recorded on the job, never lost)
            log.exception("job %s failed", job_id)
            self.store.fail(job_id, f"internal error: {type(e).__name__}: {e}")
        finally:
            ended.set()
            beating.join()

    def _generate(self, job_id: str) -> None:
        try:
            request = load_request(self.cfg, job_id)
        except (OSError, ValueError) as e:
            self.store.fail(job_id, f"its request could not be read back: {e}")
            return
        try:
            gen = self.pipe(request["image"], request["prompt"], num_steps=request["num_steps"],
                            seed=request["seed"], guidance_scale=request["guidance"],
                            mode=request["mode"], joints=request.get("joints"),
                            points=request.get("points"), video=request.get("video"),
                            K=request.get("K"),
                            progress=lambda step, total: self.store.beat(job_id, step, total))
        except InputError as e:
            self.store.fail(job_id, str(e))
            return
        result = write_generation(gen, join(self.cfg.serve.results, job_id), self.cfg.storage,
                                  extra={"id": job_id})
        self.store.finish(job_id, result["files"])

    def _beat(self, job_id: str, ended: threading.Event) -> None:
        """The lease of a running job: renewed every lease_s / 6 s, also inside a long step."""
        while not ended.wait(self.cfg.serve.lease_s / 6):
            try:
                self.store.beat(job_id)
            except redis.RedisError as e:
                log.warning("job %s: no beat (%s)", job_id, e)


def _answer(job: dict[str, Any], request: Request) -> dict[str, Any]:
    """A stored job as the status route and the events show it; file URLs under the app's
    route prefix (Serve's root_path)."""
    job_id = job["id"]
    root = request.scope.get("root_path", "").rstrip("/")
    files = {name: f"{root}/v1/generations/{job_id}/files/{name}" for name in job["files"]}
    return {"id": job_id, "status": job["status"], "position": job["position"],
            "step": job["step"], "num_steps": job["num_steps"], "error": job["error"],
            "attempts": job["attempts"], "files": files if job["status"] == DONE else {}}


def keep_request(cfg: Config, job_id: str, job: dict[str, Any], data: bytes,
                 inputs: dict[str, bytes]) -> None:
    """The request next to its results: what was asked, the image as uploaded, and the
    motion or video the mode takes (`inputs`: file name -> bytes)."""
    with Image.open(io.BytesIO(data)) as im:
        suffix = IMAGE_FORMATS[im.format]
    directory = join(cfg.serve.results, job_id)
    write_bytes(join(directory, "input" + suffix), data, cfg.storage)
    for name, content in inputs.items():
        write_bytes(join(directory, name), content, cfg.storage)
    fields = {k: v for k, v in job.items() if k != "image"} | {"image": "input" + suffix,
                                                              "inputs": sorted(inputs)}
    write_text(join(directory, REQUEST_NAME), json.dumps(fields, indent=2), cfg.storage)


def load_request(cfg: Config, job_id: str) -> dict[str, Any]:
    """A job as `keep_request` stored it: the pipeline's arguments."""
    directory = join(cfg.serve.results, job_id)
    job = json.loads(read_text(join(directory, REQUEST_NAME), cfg.storage))
    job["image"] = read_bytes(join(directory, job["image"]), cfg.storage)
    inputs = job.pop("inputs", [])
    if MOTION_NAME in inputs:
        with np.load(io.BytesIO(read_bytes(join(directory, MOTION_NAME), cfg.storage))) as m:
            job["joints"], job["points"] = m["joints"], m["points"]
    if VIDEO_NAME in inputs:
        job["video"] = read_bytes(join(directory, VIDEO_NAME), cfg.storage)
    if job.get("K") is not None:
        job["K"] = np.asarray(job["K"], np.float32)
    return job


# ---------------------------------------------------------------------------------------------
# The HTTP API
# ---------------------------------------------------------------------------------------------


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class SViMoAPI:
    def __init__(self, model_dir: str, cfg: Config, sampler: DeploymentHandle) -> None:
        """`sampler` is bound so that Serve deploys it; jobs reach it through the broker."""
        self.store = JobStore(cfg.serve, patient=False)
        try:  # first: without its Redis the app cannot work
            self.store.ping()
        except StoreUnavailable as e:
            raise RuntimeError(f"serve.broker {cfg.serve.broker}: Redis does not answer ({e}); "
                               f"start it (redis-server --appendonly yes) or name another "
                               f"in serve.broker") from None
        self.cfg, self.model_dir = cfg, model_dir
        self.model_cfg = model_config(model_dir, cfg.storage)
        self.tokenizer = load_tokenizer(self.model_cfg.encoders.tokenizer, cfg.storage)
        self.modes = list(model_modes(model_dir, cfg.storage))
        self.keys = (keys.load(cfg.serve.api_keys, cfg.storage) if cfg.serve.api_keys
                     else None)
        self.broker = instantiate_adapter_from_config(task_processor(cfg.serve))
        Image.MAX_IMAGE_PIXELS = cfg.serve.max_image_pixels  # PIL refuses far larger at open
        # Serve runs the constructor on the replica's event loop: the reaper runs on it
        self.reaper = asyncio.get_running_loop().create_task(self._reap())

    # --- pages and facts --------------------------------------------------------------------

    @api.get("/", include_in_schema=False)
    def page(self) -> Response:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return JSONResponse({"detail": "the web page is not installed"}, status_code=404)
        return FileResponse(index, media_type="text/html")

    @api.get("/healthz")
    async def health(self) -> dict[str, Any]:
        """Liveness, the model served and the queue."""
        counts = await self._stored(self.store.counts)
        return {"status": "ok", "model": self.model_dir, "queued": counts["queued"],
                "running": counts["running"]}

    @api.get("/v1/config")
    def config(self) -> dict[str, Any]:
        """What a submission may ask for."""
        d, s = self.model_cfg.data, self.cfg.sample
        return {"num_frames": d.num_frames, "height": d.height, "width": d.width, "fps": d.fps,
                "default_steps": s.num_steps, "max_steps": s.max_steps,
                "modes": self.modes,
                "max_prompt_tokens": self.model_cfg.model.max_text_tokens,
                "auth": self.keys is not None,
                "max_image_bytes": self.cfg.serve.max_image_bytes,
                "max_image_pixels": self.cfg.serve.max_image_pixels}

    # --- submissions ------------------------------------------------------------------------

    @api.post("/v1/generations", status_code=202)
    async def submit(self, request: Request, credentials: Credentials,
                     image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
                     prompt: Annotated[str, Form(description="e.g. 'stir the bowl with the "
                                                             "spoon'")],
                     num_steps: Annotated[int | None, Form()] = None,
                     seed: Annotated[int | None, Form()] = None,
                     guidance: Annotated[float | None, Form()] = None,
                     mode: Annotated[str | None, Form()] = None,
                     motion: Annotated[UploadFile | None, File(
                         description="motion_to_video: an .npz with arrays joints (N, 42, 3) "
                                     "and points (N, 298, 3), or a motion.json, metres in the "
                                     "camera frame")] = None,
                     video: Annotated[UploadFile | None, File(
                         description="video_to_motion: an MP4 of the model's frame "
                                     "count")] = None,
                     K: Annotated[str | None, Form(
                         description="motion_to_video: the 3 x 3 intrinsics the motion is "
                                     "drawn with, as JSON; default: the data's field of "
                                     "view")] = None) -> JSONResponse:
        """Queue a generation; answers its id at once (202). 429 + Retry-After when the
        queue, or the API key's share of it, is full."""
        caller = self._caller(credentials)
        unknown = sorted(set((await request.form()).keys()) - set(FIELDS))
        if unknown:
            raise HTTPException(422, f"unknown field(s) {unknown}; allowed: {list(FIELDS)}")
        data = await image.read()
        job = {"image": self._check_image(data), "prompt": prompt,
               "num_steps": self._check_range("num_steps", num_steps, self.cfg.sample.num_steps,
                                              1, self.cfg.sample.max_steps),
               "seed": self._check_range("seed", seed, 0, 0, MAX_SEED),
               "guidance": self._check_guidance(guidance),
               "mode": self._check_mode(mode)}
        try:
            check_prompt(prompt, self.tokenizer, self.model_cfg.model.max_text_tokens)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        inputs = await self._check_inputs(job["mode"], motion, video, K)
        job["K"] = inputs.pop("K")
        job_id = uuid.uuid4().hex
        share = None if self.keys is None else (caller.max_queued
                                                  or self.cfg.serve.max_queued_per_key)
        answer = await self._stored(self.store.submit, job_id, job["num_steps"], caller.name,
                                    share)
        if "retry_after_s" in answer:
            wait = answer["retry_after_s"]
            full = ("the queue is full" if answer["full"] == "queue" else
                    f"key {caller.name!r} has {share} generations queued or running, its limit")
            return JSONResponse({"detail": f"{full}; retry in about {wait} s"},
                                status_code=429, headers={"Retry-After": str(wait)})
        await asyncio.to_thread(keep_request, self.cfg, job_id, job, data, inputs)  # S3 blocks
        try:
            await self._send(job_id)
        except Exception as e:  # noqa: BLE001 (admitted and stored: the reaper sends it)
            log.warning("job %s: not sent yet (%s); the reaper will", job_id, e)
        return JSONResponse({"id": job_id, "status": "queued", "position": answer["position"]},
                            status_code=202)

    async def _send(self, job_id: str) -> None:
        """The job's id onto the broker's queue (then marked sent: a job admitted but never
        sent, its ingress gone in between, is sent by the reaper)."""
        await asyncio.to_thread(self.broker.enqueue_task_sync, GENERATE, args=[job_id])
        await self._stored(self.store.sent, job_id)

    async def _reap(self) -> None:
        """Every serve.reap_every_s: send again the jobs whose sampler stopped beating (queued
        again, or failed after SAMPLER_ATTEMPTS) or whose ingress died before sending them.
        Every ingress replica reaps; the store's script hands each job to one of them.

        A sampler beats every lease_s / 6 s while Redis answers, so beats missed during a
        Redis outage say nothing: this replica reaps only once it has reached Redis for a
        whole lease (also after its own start)."""
        s = self.cfg.serve
        reached_since = time.monotonic()
        while True:
            await asyncio.sleep(s.reap_every_s)
            try:
                if time.monotonic() - reached_since < s.lease_s:
                    await asyncio.to_thread(self.store.ping)
                    continue
                for job_id in await asyncio.to_thread(self.store.reap, s.lease_s,
                                                      SAMPLER_ATTEMPTS):
                    log.warning("job %s: its sampler or ingress stopped; sent again", job_id)
                    await self._send(job_id)
            except Exception as e:  # noqa: BLE001 (Redis down: the next rounds wait a lease)
                log.warning("not reaping: %s", e)
                reached_since = time.monotonic()

    async def _stored(self, call, *args):
        """A store call off the event loop; 503 + Retry-After while Redis does not answer."""
        try:
            return await asyncio.to_thread(call, *args)
        except redis.RedisError as e:
            raise HTTPException(503, f"the job store does not answer ({type(e).__name__}); "
                                     f"retry shortly", headers={"Retry-After": "5"}) from None

    # --- status and results -----------------------------------------------------------------

    @api.get("/v1/generations/{job_id}")
    async def status(self, job_id: str, request: Request,
                     credentials: Credentials) -> dict[str, Any]:
        """queued (with its position) | running (step i of n) | done (with files) | failed."""
        return _answer(await self._job(job_id, credentials), request)

    @api.get("/v1/generations/{job_id}/events",
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "`status` events, each the status answer"}})
    async def events(self, job_id: str, request: Request,
                     credentials: Credentials) -> StreamingResponse:
        """Server-sent events: a `status` event (the status answer) whenever the position or
        step changes, the last one done or failed; a comment every 15 s keeps proxies from
        closing a quiet stream. The ingress reads the store every 0.25 s for each stream, so
        clients need not poll."""
        await self._job(job_id, credentials)  # 401 or 404 before the stream starts

        async def stream():
            last, quiet = None, 0.0
            while not await request.is_disconnected():
                try:
                    job = await asyncio.to_thread(self.store.get, job_id)
                except redis.RedisError:  # Redis restarting: the stream waits it out
                    job = "unavailable"
                if job is None:
                    yield f"event: gone\ndata: {json.dumps({'id': job_id})}\n\n"
                    return
                if job != "unavailable" and (answer := _answer(job, request)) != last:
                    yield f"event: status\ndata: {json.dumps(answer)}\n\n"
                    last, quiet = answer, 0.0
                    if answer["status"] in ENDED:
                        return
                elif quiet >= EVENTS_KEEPALIVE_S:
                    yield ": waiting\n\n"
                    quiet = 0.0
                await asyncio.sleep(EVENTS_EVERY_S)
                quiet += EVENTS_EVERY_S

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @api.get("/v1/generations/{job_id}/files/{name}")
    async def file(self, job_id: str, name: str, credentials: Credentials) -> Response:
        """One file of a finished generation (see /v1/generations/{id} for the names)."""
        job = await self._job(job_id, credentials)
        if job["status"] != DONE or name not in job["files"]:
            raise HTTPException(404, f"generation {job_id} has no file {name!r}"
                                + ("" if job["status"] == DONE else " yet"))
        path = join(self.cfg.serve.results, job_id, name)
        if not is_s3(path):
            return FileResponse(path, media_type=content_type(name))
        data = await asyncio.to_thread(read_bytes, path, self.cfg.storage)
        return Response(data, media_type=content_type(name))

    async def _job(self, job_id: str, credentials: HTTPAuthorizationCredentials | None
                   ) -> dict[str, Any]:
        """The caller's job: another key's is as unknown as a job that never was (404)."""
        caller = self._caller(credentials)
        job = await self._stored(self.store.get, job_id) if JOB_ID.match(job_id) else None
        if job is None or (self.keys is not None and job["owner"] != caller.name):
            raise HTTPException(404, f"no generation {job_id!r}")
        return job

    def _caller(self, credentials: HTTPAuthorizationCredentials | None) -> keys.Key:
        """Whose request this is: the bearer key's, where the app has keys (else 401)."""
        if self.keys is None:
            return ANYONE
        if credentials is None:
            raise HTTPException(401, "send an API key: Authorization: Bearer <key>",
                                headers={"WWW-Authenticate": "Bearer"})
        key = self.keys.get(keys.digest(credentials.credentials))
        if key is None:
            raise HTTPException(401, "this API key is not known",
                                headers={"WWW-Authenticate": "Bearer"})
        return key

    # --- checks -------------------------------------------------------------------------------

    def _check_image(self, data: bytes) -> bytes:
        limit = self.cfg.serve.max_image_bytes
        if len(data) > limit:
            raise HTTPException(413, f"the image has {len(data)} bytes; the limit is {limit}")
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in IMAGE_FORMATS:
                    raise HTTPException(415, f"image type {im.format} is not accepted: send "
                                             f"PNG, JPEG or WebP")
                pixels = im.width * im.height
                if pixels > self.cfg.serve.max_image_pixels:
                    raise HTTPException(413, f"the image has {im.width} x {im.height} pixels; "
                                             f"the limit is {self.cfg.serve.max_image_pixels}")
                im.load()
        except (UnidentifiedImageError, Image.DecompressionBombError) as e:
            if isinstance(e, Image.DecompressionBombError):
                raise HTTPException(413, f"the image is too large: {e}") from None
            raise HTTPException(415, "the file is not an image we read: send PNG, JPEG or "
                                     "WebP") from None
        except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
            raise HTTPException(422, f"the image could not be decoded: {e}") from None
        return data

    @staticmethod
    def _check_range(name: str, value: int | None, default: int, low: int, high: int) -> int:
        if value is None:
            return default
        if not low <= value <= high:
            raise HTTPException(422, f"{name} must be in [{low}, {high}], got {value}")
        return value

    def _check_guidance(self, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_GUIDANCE):
            raise HTTPException(422, f"guidance must be a number in [0, {MAX_GUIDANCE}], "
                                     f"got {value}")
        return value

    async def _check_inputs(self, mode: str, motion: UploadFile | None,
                            video: UploadFile | None, K: str | None) -> dict[str, Any]:
        """The uploads `mode` takes, checked: {"K": list | None, and the files to keep}."""
        needs = {"motion_to_video": "motion", "video_to_motion": "video"}.get(mode)
        given = {name for name, value in (("motion", motion), ("video", video), ("K", K))
                 if value is not None}
        extra = given - ({needs, "K"} if needs == "motion" else {needs})
        if extra:
            raise HTTPException(422, f"mode {mode!r} takes no {sorted(extra)}")
        if needs is not None and needs not in given:
            raise HTTPException(422, f"mode {mode!r} needs a {needs} upload")
        s, frames = self.cfg.serve, self.model_cfg.data.num_frames
        inputs: dict[str, Any] = {"K": None}
        try:
            if motion is not None:
                data = await self._read_upload(motion, "motion", s.max_motion_bytes)
                joints, points = uploads.read_motion(data, frames)
                buffer = io.BytesIO()
                np.savez(buffer, joints=joints, points=points)
                inputs[MOTION_NAME] = buffer.getvalue()
            if video is not None:
                data = await self._read_upload(video, "video", s.max_video_bytes)
                await asyncio.to_thread(uploads.check_video, data, frames, s.max_image_pixels)
                inputs[VIDEO_NAME] = data
            if K is not None:
                inputs["K"] = uploads.parse_intrinsics(K).tolist()
        except uploads.UploadError as e:
            raise HTTPException(e.status, str(e)) from None
        return inputs

    @staticmethod
    async def _read_upload(upload: UploadFile, what: str, limit: int) -> bytes:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"the {what} has more than {limit} bytes, the limit")
        return data

    def _check_mode(self, mode: str | None) -> str:
        if mode is None:
            return "joint"
        if mode not in self.modes:
            raise HTTPException(422, f"mode {mode!r} is not one of {self.modes}")
        return mode


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------


def svimo(args: dict[str, str]) -> serve.Application:
    """The application for `serve run serve.app:svimo [config=FILE] [flavour=NAME]
    [section.key=value ...]`: a run file (default configs/default.yaml) and overrides."""
    args = dict(args)
    path = args.pop("config", "configs/default.yaml")
    if not os.path.exists(path) and (PROJECT_ROOT / path).exists():
        path = str(PROJECT_ROOT / path)  # built on a node whose cwd is not the project's
    flavour = args.pop("flavour", None)
    overrides = [item for key, value in args.items() for item in (f"--{key}", str(value))]
    return build_app(load_config(path, overrides, flavour=flavour))


def build_app(cfg: Config) -> serve.Application:
    """The two deployments wired together for `cfg` (serve.*, sample.* step limits)."""
    s = cfg.serve
    model_dir = find_model(absolute(cfg.model_path(s.model)), cfg.storage)
    s = dataclasses.replace(s, results=absolute(s.results),
                            api_keys=s.api_keys and absolute(s.api_keys))
    if s.api_keys:
        keys.load(s.api_keys, cfg.storage)  # a bad keys file fails `serve run` at once
    cfg = dataclasses.replace(cfg, serve=s)
    replica = {"num_cpus": s.replica_cpus, "num_gpus": s.replica_gpus}
    if s.accelerator_type:
        replica["accelerator_type"] = s.accelerator_type
    if ray.is_initialized():  # `serve run` on a cluster: fail now rather than wait forever
        resources.check([Reservation("Serve sampler replica", {
            "CPU": s.replica_cpus, "GPU": s.replica_gpus} | accelerator(s.accelerator_type),
            max(1, s.min_replicas))])
    sampler = serve.deployment(
        task_consumer(task_processor_config=task_processor(s))(SamplingReplica),
        name="SamplingReplica",
        # one generation at a time: Serve gives a task consumer this many Celery threads
        max_ongoing_requests=1,
        autoscaling_config=AutoscalingConfig(
            min_replicas=s.min_replicas, max_replicas=s.max_replicas,
            target_ongoing_requests=s.target_ongoing_requests,
            upscale_delay_s=s.upscale_delay_s, downscale_delay_s=s.downscale_delay_s,
            policy=AutoscalingPolicy(policy_function=JobsAutoscalingPolicy,
                                     policy_kwargs=dataclasses.asdict(s))),
        # the GPUs come from the config: an autoscaling cluster has none until a replica
        # asks for one
        ray_actor_options=replica,
    ).bind(model_dir, cfg)
    return SViMoAPI.options(
        num_replicas=s.ingress_replicas,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": {MAX_BODY_ENV: str(max_body(s))}}},
    ).bind(model_dir, cfg, sampler)
