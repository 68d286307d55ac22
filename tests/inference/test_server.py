"""The generation server over real HTTP on loopback (uvicorn in a thread), sampling with a tiny random
DiT: concurrent load, bad requests, a full queue, the API key, and a restart that keeps its jobs."""
from __future__ import annotations

import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from megatron_video.config.loader import load_config
from megatron_video.inference.generator import VideoGenerator
from megatron_video.inference.server.launch import build_app, request_rules
from megatron_video.testing.live_server import LiveServer
from megatron_video.testing.tiny import tiny_components

PROMPT = {"prompt": "a red car", "num_frames": 2, "height": 8, "width": 8, "num_inference_steps": 2}


class GatedGenerator:
    """The tiny generator, held at a gate: jobs stay running (and later ones queued) until it opens."""

    def __init__(self, inner):
        self.inner, self.gate = inner, threading.Event()

    def generate(self, request):
        self.gate.wait(60)
        return self.inner.generate(request)


@pytest.fixture(scope="module")
def generator(megatron_single):
    return VideoGenerator(tiny_components(), torch.device("cpu"))


def _app(tmp_path, generator, inner, *overrides):
    cfg = load_config("demo", [f"run.output_dir={tmp_path}", "sample.frames=2", "sample.height=8", "sample.width=8",
                               "sample.steps=2", "serve.max_body_bytes=2048", "serve.max_frames=16",
                               "serve.max_steps=8", "serve.max_prompt_chars=200", *overrides])
    return build_app(cfg, generator, request_rules(cfg, inner), model_name="tiny")


def test_fifty_concurrent_requests_all_complete_without_server_errors(tmp_path, generator):
    with LiveServer(_app(tmp_path, generator, generator, "serve.max_queue=64")) as server:
        bodies = [{**PROMPT, "prompt": f"clip number {i}", "seed": i} for i in range(50)]
        with ThreadPoolExecutor(50) as pool:
            submitted = list(pool.map(lambda b: server.call("POST", "/v1/videos/generations", b), bodies))
        assert [code for code, _, _ in submitted] == [202] * 50, submitted
        ids = [job["id"] for _, job, _ in submitted]
        assert len(set(ids)) == 50 and all(job["status"] == "queued" for _, job, _ in submitted)
        with ThreadPoolExecutor(8) as pool:
            finished = list(pool.map(lambda i: server.wait_for(i, "completed"), ids))
            contents = list(pool.map(lambda i: server.call("GET", f"/v1/videos/{i}/content"), ids))
        assert all(job["url"] == f"/v1/videos/{job['id']}/content" for job in finished)
        assert all(code == 200 and body[4:8] == b"ftyp" and h["content-type"] == "video/mp4"
                   for code, body, h in contents)
        code, metrics, _ = server.call("GET", "/metrics")
        text = metrics.decode()
        assert code == 200 and 'mvideo_jobs_finished_total{status="completed"} 50.0' in text
        assert 'mvideo_http_requests_total{route="/v1/videos/generations",status="202"} 50.0' in text
        assert "mvideo_queue_depth 0.0" in text
        assert not [line for line in text.splitlines() if line.startswith("mvideo_http_requests_total")
                    and 'status="5' in line]


def test_malformed_and_oversized_bodies_get_4xx_with_a_message(tmp_path, generator):
    post = "/v1/videos/generations"
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "valid dictionary"),
        ({"num_frames": 2}, 422, "prompt"),
        ({**PROMPT, "colour": "red"}, 422, "colour"),
        ({**PROMPT, "num_frames": "many"}, 422, "num_frames"),
        ({**PROMPT, "guidance_scale": 0.5}, 422, "guidance_scale"),
        ({**PROMPT, "num_frames": 17}, 422, "num_frames is 17; this server allows at most 16"),
        ({**PROMPT, "num_inference_steps": 9}, 422, "num_inference_steps"),
        ({**PROMPT, "height": 2000}, 422, "height is 2000"),
        ({**PROMPT, "width": 9}, 422, "width 9 is not a multiple of 4"),
        ({**PROMPT, "prompt": "x" * 201}, 422, "prompt is 201 characters"),
        ({**PROMPT, "prompt": "x" * 3000}, 413, "at most 2048"),
    ]
    with LiveServer(_app(tmp_path, generator, generator)) as server:
        for body, status, message in cases:
            code, payload, _ = server.call("POST", post, body)
            assert code == status and message in payload["error"]["message"], (body, code, payload)
        # A body with no Content-Length (chunked) is cut off at the limit as well, and its client gets the
        # 413 every time: answering while its last chunks are still on the way reset the connection
        # (2% of requests), so the test sends 30.
        for _ in range(30):
            chunked = urllib.request.Request(server.url + post, data=iter([b'{"prompt": "', b"y" * 4000, b'"}']),
                                             method="POST", headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(chunked, timeout=30)
            assert err.value.code == 413 and "exceeds 2048" in json.loads(err.value.read())["error"]["message"]
        code, payload, _ = server.call("GET", "/v1/videos/video_unknown")
        assert code == 404 and "video_unknown" in payload["error"]["message"]
        code, health, _ = server.call("GET", "/health")
        assert code == 200 and health["queued"] == 0  # nothing refused was queued


def test_full_queue_gets_429_and_the_api_key_is_enforced(tmp_path, generator, monkeypatch):
    monkeypatch.setenv("MVIDEO_TEST_KEY", "s3cret")
    gated = GatedGenerator(generator)
    app = _app(tmp_path, gated, generator, "serve.max_queue=2", "serve.api_key_env=MVIDEO_TEST_KEY")
    key = {"Authorization": "Bearer s3cret"}
    with LiveServer(app) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            code, payload, _ = server.call("POST", "/v1/videos/generations", PROMPT, headers)
            assert code == 401 and "API key" in payload["error"]["message"]
        assert server.call("GET", "/v1/videos/video_x", headers={})[0] == 401
        first = server.call("POST", "/v1/videos/generations", PROMPT, key)[1]["id"]
        server.wait_for(first, "in_progress", headers=key)  # taken by the worker, held at the gate
        queued = [server.call("POST", "/v1/videos/generations", PROMPT, key) for _ in range(2)]
        assert [code for code, _, _ in queued] == [202, 202]
        code, payload, headers = server.call("POST", "/v1/videos/generations", PROMPT, key)
        assert code == 429 and "queue is full" in payload["error"]["message"] and headers["retry-after"] == "5"
        code, payload, _ = server.call("GET", f"/v1/videos/{queued[0][1]['id']}/content", headers=key)
        assert code == 409 and "queued" in payload["error"]["message"]
        assert server.call("GET", "/health")[0] == 200 and server.call("GET", "/metrics")[0] == 200
        assert "mvideo_jobs_rejected_total 1.0" in server.call("GET", "/metrics")[1].decode()
        gated.gate.set()
        for video_id in [first] + [job["id"] for _, job, _ in queued]:
            server.wait_for(video_id, "completed", headers=key)
        assert server.call("POST", "/v1/videos/generations", PROMPT, key)[0] == 202  # room again


def test_a_restart_keeps_queued_and_finished_jobs(tmp_path, generator):
    gated = GatedGenerator(generator)
    with LiveServer(_app(tmp_path, gated, generator, "serve.shutdown_grace_s=0.2")) as server:
        done_before = server.call("POST", "/v1/videos/generations", PROMPT)[1]["id"]
        gated.gate.set()
        server.wait_for(done_before, "completed")
        gated.gate.clear()
        ids = [server.call("POST", "/v1/videos/generations", {**PROMPT, "seed": i})[1]["id"] for i in range(3)]
        server.wait_for(ids[0], "in_progress")
    # Stopped with one job running (held at the gate past the grace period) and two queued.
    with LiveServer(_app(tmp_path, generator, generator)) as server:
        gated.gate.set()  # the old worker's job finishes now, but its result is no longer recorded
        assert server.call("GET", f"/v1/videos/{done_before}/content")[0] == 200
        jobs = [server.wait_for(video_id, "completed") for video_id in ids]
        assert [job["seed"] for job in jobs] == [0, 1, 2]
        assert all(server.call("GET", f"/v1/videos/{i}/content")[0] == 200 for i in ids)


class RefusingGenerator:
    def generate(self, request):
        raise RuntimeError(f"cannot draw '{request.prompt}'")


def test_a_failing_job_is_reported_and_the_worker_goes_on(tmp_path, generator):
    with LiveServer(_app(tmp_path, RefusingGenerator(), generator)) as server:
        video_id = server.call("POST", "/v1/videos/generations", PROMPT)[1]["id"]
        job = server.wait_for(video_id, "failed")
        assert job["error"]["message"] == "RuntimeError: cannot draw 'a red car'"
        assert server.call("GET", "/health")[1]["status"] == "ok"
        assert 'mvideo_jobs_finished_total{status="failed"} 1.0' in server.call("GET", "/metrics")[1].decode()
