"""A FastAPI app served by uvicorn on a free loopback port in a background thread, with a small
JSON client: for the server tests and the serving benchmark (real HTTP, no test client)."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Self

import uvicorn


class LiveServer:
    """The app served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def call(self, method: str, path: str, body: bytes | dict | None = None,
             headers: dict | None = None) -> tuple[int, dict | bytes, dict]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload, response_headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            status, payload, response_headers = err.code, err.read(), dict(err.headers)
        if response_headers.get("content-type", "").startswith("application/json"):
            payload = json.loads(payload)
        return status, payload, response_headers

    def wait_for(self, video_id: str, status: str, timeout: float = 120, headers: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, job, _ = self.call("GET", f"/v1/videos/{video_id}", headers=headers)
            assert code == 200, job
            if job["status"] == status:
                return job
            assert job["status"] != "failed", job
            assert time.monotonic() < deadline, f"{video_id} still {job['status']}"
            time.sleep(0.05)
