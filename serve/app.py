"""The `svimo` Ray Serve application: an HTTP API and web page in front of autoscaled sampler
replicas.

    serve run serve.app:svimo                                  # configs/default.yaml
    serve run serve.app:svimo config=my.yaml serve.model=s3://bucket/runs/svimo
    serve deploy serve/svimo.yaml                              # the same, as a Serve config

Deployments:
- `SViMoAPI` (FastAPI ingress): validates submissions, queues them in the `JobStore`, hands
  them to the sampler, answers status and results, serves the page at `/`.
- `SamplingReplica`: one `SViMoPipeline` per replica, one generation at a time; autoscaled between
  serve.min_replicas and serve.max_replicas on ongoing requests (GPU replicas on GPU
  clusters). Writes each generation's files to <serve.results>/<id>/.
- `JobStore`: job states, queue positions and progress, reachable from every replica. A
  restarted ingress dispatches the store's unfinished jobs again from their stored requests
  (one ingress replica: with more, each would).

Generation takes minutes at full scale, so a submission answers at once with an id (202);
clients poll `/v1/generations/{id}`. Bad input is a 4xx that says what to fix; a full queue
is 429 with Retry-After.

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
import uuid
from pathlib import Path
from typing import Annotated, Any

import ray
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from cluster.runtime import PROJECT_ROOT
from hoi import resources
from hoi.artifacts import find_model, model_config
from hoi.config import Config, ServeConfig, load_config
from hoi.model.encoders import load_tokenizer
from hoi.outputs import content_type, write_generation
from hoi.pipeline import InputError, SViMoPipeline, check_prompt, model_modes
from hoi.resources import Reservation, accelerator
from hoi.storage import absolute, is_s3, join, read_bytes, read_text, write_bytes, write_text
from serve.jobs import DONE, JobStore

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
FIELDS = ("image", "prompt", "num_steps", "seed", "guidance", "mode")
HTTP_MODES = ("joint", "video_only")
"""Modes a submission can ask for: the other two need a motion or video upload (batch job)."""
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 100.0
FORM_OVERHEAD = 64 * 1024
"""Bytes a multipart body may hold beyond the image (boundaries, headers, small fields)."""
SAMPLER_ATTEMPTS = 2
"""A job whose sampler replica dies is run again once, then reported failed."""
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
REQUEST_NAME = "request.json"
"""Each job's fields, next to its uploaded image and (once done) its results."""

api = FastAPI(title="SViMo", version="0.1.0",
              description="Generate the video and 3D hand-object motion of a prompt from a "
                          "reference image. Submit, poll the status, fetch the files.")


# `serve.ingress` freezes a copy of `api` when it decorates the class: middleware and mounts
# must be declared before it. The deployment class itself reaches its replicas pickled by
# value (module state it writes is its own copy), so the body limit travels in the ingress
# replica's environment (`build_app`).
MAX_BODY_ENV = "SVIMO_MAX_BODY"


@api.middleware("http")
async def limit_body(request: Request, call_next):
    """Refuse a submission whose body is larger than an image may be, before reading it."""
    if request.method == "POST":
        length = request.headers.get("content-length")
        limit = int(os.environ.get(MAX_BODY_ENV, ServeConfig.max_image_bytes + FORM_OVERHEAD))
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


@serve.deployment(max_ongoing_requests=1)
class SamplingReplica:
    """One pipeline; runs one generation at a time and writes its files."""

    def __init__(self, model_dir: str, cfg: Config, store: DeploymentHandle) -> None:
        self.cfg, self.store = cfg, store
        self.pipe = SViMoPipeline.from_pretrained(model_dir, cfg.storage)

    def generate(self, job_id: str, request: dict[str, Any]) -> None:
        """Run one job and record how it ended in the store (a sync method: Serve runs it in
        a thread, so the replica keeps answering; the store calls block in that thread).
        Recording here rather than in the ingress keeps a finished job finished even when
        the ingress that dispatched it has gone."""
        self.store.start.remote(job_id).result()

        def progress(step: int, total: int) -> None:
            self.store.progress.remote(job_id, step, total)

        try:
            gen = self.pipe(request["image"], request["prompt"], num_steps=request["num_steps"],
                            seed=request["seed"], guidance_scale=request["guidance"],
                            mode=request["mode"], progress=progress)
        except InputError as e:
            self.store.fail.remote(job_id, str(e)).result()
            return
        result = write_generation(gen, join(self.cfg.serve.results, job_id), self.cfg.storage,
                                  extra={"id": job_id})
        self.store.finish.remote(job_id, result["files"]).result()


# ---------------------------------------------------------------------------------------------
# The HTTP API
# ---------------------------------------------------------------------------------------------


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class SViMoAPI:
    def __init__(self, model_dir: str, cfg: Config, sampler: DeploymentHandle,
                 store: DeploymentHandle) -> None:
        self.cfg, self.model_dir = cfg, model_dir
        self.model_cfg = model_config(model_dir, cfg.storage)
        self.tokenizer = load_tokenizer(self.model_cfg.encoders.tokenizer, cfg.storage)
        self.modes = [m for m in model_modes(model_dir, cfg.storage) if m in HTTP_MODES]
        self.sampler, self.store = sampler, store
        self.tasks: set[asyncio.Task] = set()
        Image.MAX_IMAGE_PIXELS = cfg.serve.max_image_pixels  # PIL refuses far larger at open
        # Serve runs the constructor on the replica's event loop: recovery starts with it.
        self.recovery = asyncio.get_running_loop().create_task(self._recover())

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
        counts = await self.store.counts.remote()
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
                "max_image_bytes": self.cfg.serve.max_image_bytes,
                "max_image_pixels": self.cfg.serve.max_image_pixels}

    # --- submissions ------------------------------------------------------------------------

    @api.post("/v1/generations", status_code=202)
    async def submit(self, request: Request,
                     image: Annotated[UploadFile, File(description="PNG, JPEG or WebP")],
                     prompt: Annotated[str, Form(description="e.g. 'stir the bowl with the "
                                                             "spoon'")],
                     num_steps: Annotated[int | None, Form()] = None,
                     seed: Annotated[int | None, Form()] = None,
                     guidance: Annotated[float | None, Form()] = None,
                     mode: Annotated[str | None, Form()] = None) -> JSONResponse:
        """Queue a generation; answers its id at once (202). 429 + Retry-After when full."""
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
        job_id = uuid.uuid4().hex
        answer = await self.store.submit.remote(job_id, job["num_steps"])
        if "retry_after_s" in answer:
            wait = answer["retry_after_s"]
            return JSONResponse({"detail": f"the queue is full; retry in about {wait} s"},
                                status_code=429, headers={"Retry-After": str(wait)})
        await asyncio.to_thread(self._keep_request, job_id, job, data)  # S3 writes block
        self._dispatch(job_id, job)
        return JSONResponse({"id": job_id, "status": "queued", "position": answer["position"]},
                            status_code=202)

    def _dispatch(self, job_id: str, job: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run(job_id, job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id: str, job: dict[str, Any]) -> None:
        """Hand the job to a sampler replica (Serve queues it until one is free; the sampler
        records the outcome); a replica that dies mid-job gets the job again on another."""
        for attempt in range(1, SAMPLER_ATTEMPTS + 1):
            try:
                await self.sampler.generate.remote(job_id, job)
            except (ActorDiedError, ActorUnavailableError, RayActorError) as e:
                if attempt < SAMPLER_ATTEMPTS:
                    log.warning("job %s: sampler replica died (%s); running it again", job_id, e)
                    await self.store.requeue.remote(job_id)
                    continue
                await self.store.fail.remote(job_id, f"the sampler stopped {attempt} times: {e}")
            except Exception as e:  # noqa: BLE001 (recorded on the job, never lost)
                log.exception("job %s failed", job_id)
                await self.store.fail.remote(job_id, f"internal error: {type(e).__name__}: {e}")
            return

    async def _recover(self) -> None:
        """Dispatch again the jobs a previous ingress replica left unfinished (the Serve
        controller restarts a dead ingress; its dispatch tasks died with it). Their requests
        are on storage; a job that was in fact still running runs twice, never zero times."""
        for job_id in await self.store.unfinished.remote():
            try:
                job = await asyncio.to_thread(self._load_request, job_id)
            except (OSError, ValueError) as e:
                await self.store.fail.remote(job_id, f"its request could not be read back: {e}")
                continue
            log.warning("job %s: dispatched again after an ingress restart", job_id)
            self._dispatch(job_id, job)

    # --- status and results -----------------------------------------------------------------

    @api.get("/v1/generations/{job_id}")
    async def status(self, job_id: str) -> dict[str, Any]:
        """queued (with its position) | running (step i of n) | done (with files) | failed."""
        job = await self._job(job_id)
        files = {name: f"/v1/generations/{job_id}/files/{name}" for name in job["files"]}
        return {"id": job_id, "status": job["status"], "position": job["position"],
                "step": job["step"], "num_steps": job["num_steps"], "error": job["error"],
                "attempts": job["attempts"], "files": files if job["status"] == DONE else {}}

    @api.get("/v1/generations/{job_id}/files/{name}")
    async def file(self, job_id: str, name: str) -> Response:
        """One file of a finished generation (see /v1/generations/{id} for the names)."""
        job = await self._job(job_id)
        if job["status"] != DONE or name not in job["files"]:
            raise HTTPException(404, f"generation {job_id} has no file {name!r}"
                                + ("" if job["status"] == DONE else " yet"))
        path = join(self.cfg.serve.results, job_id, name)
        if not is_s3(path):
            return FileResponse(path, media_type=content_type(name))
        data = await asyncio.to_thread(read_bytes, path, self.cfg.storage)
        return Response(data, media_type=content_type(name))

    async def _job(self, job_id: str) -> dict[str, Any]:
        job = await self.store.get.remote(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"no generation {job_id!r}")
        return job

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

    def _check_mode(self, mode: str | None) -> str:
        if mode is None:
            return "joint"
        if mode not in self.modes:
            raise HTTPException(422, f"mode {mode!r} is not one of {self.modes}")
        return mode

    def _keep_request(self, job_id: str, job: dict[str, Any], data: bytes) -> None:
        """The request next to its results: what was asked, and the image as uploaded."""
        with Image.open(io.BytesIO(data)) as im:
            suffix = IMAGE_FORMATS[im.format]
        directory = join(self.cfg.serve.results, job_id)
        write_bytes(join(directory, "input" + suffix), data, self.cfg.storage)
        fields = {k: v for k, v in job.items() if k != "image"} | {"image": "input" + suffix}
        write_text(join(directory, REQUEST_NAME), json.dumps(fields, indent=2),
                   self.cfg.storage)

    def _load_request(self, job_id: str) -> dict[str, Any]:
        """A job as `_keep_request` stored it."""
        directory = join(self.cfg.serve.results, job_id)
        job = json.loads(read_text(join(directory, REQUEST_NAME), self.cfg.storage))
        return job | {"image": read_bytes(join(directory, job["image"]), self.cfg.storage)}




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
    """The three deployments wired together for `cfg` (serve.*, sample.* step limits)."""
    s = cfg.serve
    model_dir = find_model(absolute(cfg.model_path(s.model)), cfg.storage)
    cfg = dataclasses.replace(cfg, serve=dataclasses.replace(s, results=absolute(s.results)))
    replica = {"num_cpus": s.replica_cpus, "num_gpus": s.replica_gpus}
    if s.accelerator_type:
        replica["accelerator_type"] = s.accelerator_type
    if ray.is_initialized():  # `serve run` on a cluster: fail now rather than wait forever
        resources.check([Reservation("Serve sampler replica", {
            "CPU": s.replica_cpus, "GPU": s.replica_gpus} | accelerator(s.accelerator_type),
            s.min_replicas)])
    store = JobStore.bind(s.max_queued, s.max_replicas)
    sampler = SamplingReplica.options(
        autoscaling_config={"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                            "target_ongoing_requests": s.target_ongoing_requests,
                            "upscale_delay_s": s.upscale_delay_s,
                            "downscale_delay_s": s.downscale_delay_s},
        # the GPUs come from the config: an autoscaling cluster has none until a replica
        # asks for one
        ray_actor_options=replica,
        # a sampler's queue is the store's; requests wait in the handle, not on replicas
        max_queued_requests=-1,
    ).bind(model_dir, cfg, store)
    max_body = str(s.max_image_bytes + FORM_OVERHEAD)
    return SViMoAPI.options(
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": {MAX_BODY_ENV: max_body}}},
    ).bind(model_dir, cfg, sampler, store)

