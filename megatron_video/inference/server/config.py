"""The `serve` section: where the server listens, how much it queues, and what one request may ask."""
from __future__ import annotations

from dataclasses import dataclass

from megatron_video.config.errors import require


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: the API has no TLS of its own
    port: int = 8000
    api_key_env: str = "MVIDEO_API_KEY"  # if this variable is set, requests need "Authorization: Bearer <it>"
    jobs_db: str = ""  # empty: <run.output_dir>/serve/jobs.sqlite
    videos_dir: str = ""  # empty: <run.output_dir>/serve/videos
    max_queue: int = 16  # queued (not yet running) jobs; a submission beyond it gets 429
    max_body_bytes: int = 16_384
    max_prompt_chars: int = 2_000
    max_frames: int = 121
    max_height: int = 720
    max_width: int = 1280
    max_steps: int = 100
    shutdown_grace_s: float = 30.0  # a running job may finish within this; otherwise it is re-queued at the next start

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, "port", "must be in 1..65535")
        for key in ("max_queue", "max_body_bytes", "max_prompt_chars", "max_frames", "max_height", "max_width",
                    "max_steps"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.shutdown_grace_s >= 0, "shutdown_grace_s", "must be >= 0")
