"""The HTTP API: OpenAI-style video routes (as FastVideo's) over the job table and the worker.

  POST /v1/videos/generations   {"prompt": ..., ...} -> 202 {"id", "object": "video", "status": "queued", ...}
  GET  /v1/videos/{id}           the job's status (queued | in_progress | completed | failed)
  GET  /v1/videos/{id}/content   the mp4 once completed
  GET  /health, GET /metrics     liveness and Prometheus metrics (no API key needed)

Errors are JSON {"error": {"message", "type", "code"}}: 400 malformed JSON, 401 missing or wrong API
key, 404 unknown id, 409 content of an unfinished job, 413 oversized body, 422 a field outside the
limits (the message names it), 429 queue full, 503 worker gone.
"""
from __future__ import annotations

import contextlib
import hmac
import json
import logging
import pathlib
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from megatron_video.inference.generator import GenerationRequest
from megatron_video.inference.server.config import ServeConfig
from megatron_video.inference.server.jobs import COMPLETED, QUEUED, Job, JobStore, QueueFull
from megatron_video.inference.server.worker import Worker

log = logging.getLogger(__name__)


class GenerationBody(BaseModel):
    """The request body; fields left out take the `sample` section's values."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    num_frames: int | None = Field(default=None, ge=1)
    height: int | None = Field(default=None, ge=1)
    width: int | None = Field(default=None, ge=1)
    num_inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=1.0)  # diffusers' w: 1 is no guidance
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    fps: float | None = Field(default=None, gt=0, le=120)
    solver: Literal["euler", "ab2", "unipc"] | None = None


@dataclass
class RequestRules:
    """What a request may ask: the serve limits plus the model's shape rules and defaults."""

    limits: ServeConfig
    defaults: GenerationRequest  # prompt ignored
    size_multiple: int  # height and width must divide by the codec's and the patch's factors
    temporal_factor: int  # a causal codec takes 1 + k * temporal_factor frames

    def request_of(self, body: GenerationBody, seed: int) -> GenerationRequest:
        d, lim = self.defaults, self.limits
        request = GenerationRequest(
            prompt=body.prompt, negative_prompt=body.negative_prompt, frames=body.num_frames or d.frames,
            height=body.height or d.height, width=body.width or d.width, steps=body.num_inference_steps or d.steps,
            guidance=d.guidance if body.guidance_scale is None else body.guidance_scale - 1.0,
            solver=body.solver or d.solver, seed=seed if body.seed is None else body.seed, shift=d.shift,
            fps=body.fps or d.fps)
        for field, value, limit in (("prompt", len(request.prompt), lim.max_prompt_chars),
                                    ("negative_prompt", len(request.negative_prompt), lim.max_prompt_chars),
                                    ("num_frames", request.frames, lim.max_frames),
                                    ("height", request.height, lim.max_height),
                                    ("width", request.width, lim.max_width),
                                    ("num_inference_steps", request.steps, lim.max_steps)):
            if value > limit:
                unit = " characters" if "prompt" in field else ""
                raise _error(422, f"{field} is {value}{unit}; this server allows at most {limit}", "limit_exceeded")
        for field, value in (("height", request.height), ("width", request.width)):
            if value % self.size_multiple:
                raise _error(422, f"{field} {value} is not a multiple of {self.size_multiple}", "invalid_size")
        if self.temporal_factor > 1 and (request.frames - 1) % self.temporal_factor:
            raise _error(422, f"num_frames {request.frames} must be 1 + a multiple of {self.temporal_factor}",
                         "invalid_size")
        return request


def _error(status: int, message: str, code: str) -> HTTPException:
    return HTTPException(status, detail={"message": message, "type": "invalid_request_error", "code": code})


class Metrics:
    def __init__(self, store: JobStore, worker: Worker):
        self.registry = CollectorRegistry()
        self.requests = Counter("mvideo_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.finished = Counter("mvideo_jobs_finished", "Finished jobs by outcome", ["status"],
                                registry=self.registry)
        self.rejected = Counter("mvideo_jobs_rejected", "Submissions refused because the queue was full",
                                registry=self.registry)
        self.generation = Histogram("mvideo_generation_seconds", "Sampling + decode + mp4 time per job",
                                    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=self.registry)
        queued = Gauge("mvideo_queue_depth", "Jobs waiting", registry=self.registry)
        queued.set_function(lambda: store.count(QUEUED))
        running = Gauge("mvideo_jobs_running", "Jobs being sampled", registry=self.registry)
        running.set_function(lambda: float(worker.busy))

    def job_finished(self, status: str, seconds: float) -> None:
        self.finished.labels(status).inc()
        self.generation.observe(seconds)


def job_json(job: Job) -> dict:
    request = job.request
    return {"id": job.id, "object": "video", "status": job.status, "created_at": int(job.created_at),
            "started_at": job.started_at and int(job.started_at),
            "completed_at": job.completed_at and int(job.completed_at),
            "prompt": request["prompt"], "size": f"{request['width']}x{request['height']}",
            "num_frames": request["frames"], "seed": request["seed"],
            "url": f"/v1/videos/{job.id}/content" if job.status == COMPLETED else None,
            "error": {"message": job.error} if job.error else None}


# Past the limit the rest of a body is still read and dropped, up to this many bytes: a server that
# answers and closes while the client is still sending resets the connection, and the client loses
# the 413 and its message (seen with chunked bodies on loopback, 2% of requests).
_DRAIN_BYTES = 1 << 20


async def _read_json(request: Request, max_bytes: int) -> object:
    declared = request.headers.get("content-length")
    declared_too_large = declared is not None and declared.isdigit() and int(declared) > max_bytes
    body, received = bytearray(), 0
    if not (declared_too_large and int(declared) > _DRAIN_BYTES):
        async for chunk in request.stream():
            received += len(chunk)
            if received > _DRAIN_BYTES:
                break
            if received <= max_bytes:
                body += chunk
    if declared_too_large:
        raise _error(413, f"the body is {declared} bytes; this server takes at most {max_bytes}", "body_too_large")
    if received > max_bytes:
        raise _error(413, f"the body exceeds {max_bytes} bytes", "body_too_large")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _error(400, f"the body is not valid JSON: {err}", "invalid_json") from None


def _validation_message(err: ValidationError | RequestValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                     for e in err.errors())


def create_app(cfg: ServeConfig, store: JobStore, worker: Worker, rules: RequestRules, api_key: str | None,
               model_name: str = "megatron-video") -> FastAPI:
    metrics = Metrics(store, worker)
    worker.on_finished = metrics.job_finished

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        if worker.stop(cfg.shutdown_grace_s):
            store.close()
        else:
            log.warning("a job was still running after %.0f s; it is re-queued at the next start",
                        cfg.shutdown_grace_s)

    app = FastAPI(title="megatron-video", lifespan=lifespan)
    app.state.metrics = metrics

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise HTTPException(401, detail={"message": "missing or wrong API key (Authorization: Bearer ...)",
                                             "type": "authentication_error", "code": "invalid_api_key"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail),
                                                                 "type": "invalid_request_error", "code": None}
        headers = {"Retry-After": "5"} if exc.status_code == 429 else None
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": {"message": _validation_message(exc), "type": "invalid_request_error",
                                       "code": "invalid_value"}}, status_code=422)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(route.path if route else "unmatched", str(response.status_code)).inc()
        return response

    @app.post("/v1/videos/generations", status_code=202, dependencies=[Depends(check_key)])
    async def create_video(request: Request) -> dict:
        payload = await _read_json(request, cfg.max_body_bytes)
        try:
            body = GenerationBody.model_validate(payload)
        except ValidationError as err:
            raise _error(422, _validation_message(err), "invalid_value") from None
        generation = rules.request_of(body, seed=time.time_ns() % 2**31)
        try:
            job = store.submit(generation.to_dict(), cfg.max_queue)
        except QueueFull as err:
            metrics.rejected.inc()
            raise _error(429, f"the queue is full: {err}; retry later", "queue_full") from None
        worker.notify()
        return {**job_json(job), "model": model_name}

    def find(video_id: str) -> Job:
        job = store.get(video_id)
        if job is None:
            raise _error(404, f"no video with id '{video_id}'", "not_found")
        return job

    @app.get("/v1/videos/{video_id}", dependencies=[Depends(check_key)])
    def get_video(video_id: str) -> dict:
        return {**job_json(find(video_id)), "model": model_name}

    @app.get("/v1/videos/{video_id}/content", dependencies=[Depends(check_key)])
    def get_content(video_id: str) -> FileResponse:
        job = find(video_id)
        if job.status != COMPLETED:
            raise _error(409, f"video '{video_id}' is {job.status}, not completed", "not_ready")
        if not pathlib.Path(job.video_path).is_file():
            raise _error(404, f"the file of video '{video_id}' is gone", "not_found")
        return FileResponse(job.video_path, media_type="video/mp4", filename=f"{video_id}.mp4")

    @app.get("/health")
    def health() -> JSONResponse:
        alive = worker.alive()
        return JSONResponse({"status": "ok" if alive else "worker stopped", "queued": store.count(QUEUED),
                             "running": worker.busy}, status_code=200 if alive else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
