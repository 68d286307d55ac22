"""Put the server together from a configuration and run it: rank 0 serves HTTP, other ranks sample."""
from __future__ import annotations

import logging
import os
import pathlib

import torch.distributed as dist
from fastapi import FastAPI

from megatron_video.config.schema import RootConfig
from megatron_video.inference.generator import VideoGenerator
from megatron_video.inference.sample import requests_of, start_sampling
from megatron_video.inference.server.app import RequestRules, create_app
from megatron_video.inference.server.jobs import JobStore
from megatron_video.inference.server.worker import Generator, GroupGenerator, Worker, follow_requests

log = logging.getLogger(__name__)


def request_rules(cfg: RootConfig, generator: VideoGenerator) -> RequestRules:
    codec, patch = generator.parts.codec, generator.parts.model.cfg.patch
    return RequestRules(limits=cfg.serve, defaults=requests_of(cfg)[0],
                        size_multiple=codec.spatial_factor * max(patch[1], patch[2]),
                        temporal_factor=codec.temporal_factor * patch[0])


def build_app(cfg: RootConfig, generator: Generator, rules: RequestRules, model_name: str) -> FastAPI:
    """The FastAPI app over `generator`, its job table and videos under `serve.*` (or the run dir)."""
    serve_dir = pathlib.Path(cfg.run.output_dir) / "serve"
    store = JobStore(pathlib.Path(cfg.serve.jobs_db) if cfg.serve.jobs_db else serve_dir / "jobs.sqlite")
    worker = Worker(store, generator, pathlib.Path(cfg.serve.videos_dir) if cfg.serve.videos_dir
                    else serve_dir / "videos")
    api_key = os.environ.get(cfg.serve.api_key_env) or None
    return create_app(cfg.serve, store, worker, rules, api_key, model_name)


def serve(cfg: RootConfig) -> int:
    """`mvideo serve`: every rank loads the model; rank 0 runs the HTTP front end (uvicorn handles
    SIGINT/SIGTERM: it stops accepting, drains, then the worker finishes or leaves its job)."""
    import uvicorn

    local = start_sampling(cfg)
    if dist.get_rank() != 0:
        served = follow_requests(local)
        log.info("rank %d: sampled %d requests with rank 0", dist.get_rank(), served)
        return 0
    group = GroupGenerator(local) if dist.get_world_size() > 1 else None
    app = build_app(cfg, group or local, request_rules(cfg, local), model_name=local.checkpoint.stem)
    if os.environ.get(cfg.serve.api_key_env):
        log.info("API key required (from $%s)", cfg.serve.api_key_env)
    try:
        uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level=cfg.run.log_level.lower(),
                    timeout_graceful_shutdown=int(cfg.serve.shutdown_grace_s) + 5)
    finally:
        if group is not None:
            group.close()
    return 0
