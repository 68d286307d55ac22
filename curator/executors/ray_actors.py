"""What every actor of the Ray executors (the runner's job and stage actors, the pipeline actors)
shares: the answers an actor gives besides its work, and how the driver stops them at a run's end."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from curator.stages.base import Stage

log = logging.getLogger(__name__)

# How long the runner waits for its actors to close their stages before it kills them anyway.
CLOSE_TIMEOUT_S = 30.0


class ActorBody:
    """What every actor of the runner answers besides its work: the node it was placed on, and
    `close` before it is killed."""

    stages: list[Stage]

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        """Tear the stages down (encoder processes, decoders), as the local executor does at a run's
        end, rather than leave them to the kill that follows."""
        for stage in self.stages:
            stage.teardown()


def stop_actors(handles: list[Any]) -> None:
    """Let every actor close its stages (at most CLOSE_TIMEOUT_S), then kill it: killed at once
    rather than whenever its handle is collected, since each actor is a process (with a CUDA
    context on the GPU path) that would otherwise linger into whatever runs next, such as the
    next curate() call in the same driver."""
    import ray

    try:
        ray.wait([handle.close.remote() for handle in handles], num_returns=len(handles), timeout=CLOSE_TIMEOUT_S)
    finally:
        for handle in handles:
            ray.kill(handle)


def log_actor_nodes(handles: list[Any]) -> None:
    """Log how many of these actors each node holds. Asked once at the end, when the actors that ran
    tasks are long up: asking at placement would stall the driver loop until every new actor had
    finished its setup."""
    import ray

    nodes = ray.get([handle.node.remote() for handle in handles])
    log.info("curate ray-nodes actors_per_node=%s", dict(Counter(nodes)))
