"""Progress for long runs: a tqdm bar over inputs and a periodic, greppable throughput log line."""
from __future__ import annotations

import logging
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class RunProgress:
    def __init__(self, total_inputs: int, log_every_s: float, show_bar: bool):
        self.total = total_inputs
        self.log_every_s = log_every_s
        self.start = self._last_log = time.perf_counter()
        self.inputs_done = 0
        self.clips = 0
        self._bar = tqdm(total=total_inputs, unit="video", desc="curate", disable=not show_bar)

    def update(self, inputs_done: int, clips: int) -> None:
        self._bar.update(inputs_done - self.inputs_done)
        self.inputs_done, self.clips = inputs_done, clips
        now = time.perf_counter()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            self.log_line()

    def log_line(self) -> None:
        elapsed = time.perf_counter() - self.start
        log.info("curate progress inputs=%d/%d clips=%d clips_per_s=%.2f elapsed_s=%.1f", self.inputs_done,
                 self.total, self.clips, self.clips / max(elapsed, 1e-9), elapsed)

    def close(self) -> None:
        self._bar.close()
        self.log_line()
