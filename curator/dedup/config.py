"""DedupConfig: the `dedup` section of `mvideo dedup` (post-curation, over a curated output)."""
from __future__ import annotations

from dataclasses import dataclass, field

from curator.dedup.kmeans import KMeansConfig
from megatron_video.config import require

EMBEDDINGS = ("caption", "visual")


@dataclass
class DedupConfig:
    root: str = ""  # a curated output (its catalog and shards)
    captions: str = "captions"  # the feature set holding the caption columns below
    bucket_column: str = "caption_three_word"
    embedding: str = "caption"  # caption: MiniLM of caption_column; visual: visual_model on frames
    caption_column: str = "caption_detailed"
    visual_model: str = ""  # a local SigLIP / CLIP checkpoint folder (embedding=visual)
    frames_per_clip: int = 4
    batch_size: int = 16  # clips per visual embedding batch
    prefer: str = "duration_s"  # a catalog column: of near-duplicates the highest is kept; "": by key
    threshold: float = 0.95  # cosine similarity at which a clip duplicates a higher-ranked one
    cluster_size: int = 256  # clips per k-means cluster within a bucket (the pairwise block size)
    device: str = "auto"
    kmeans: KMeansConfig = field(default_factory=lambda: KMeansConfig(metric="cosine"))

    def __post_init__(self) -> None:
        require(self.embedding in EMBEDDINGS, "embedding", f"must be one of {EMBEDDINGS}")
        require(self.embedding != "visual" or bool(self.visual_model), "visual_model",
                "embedding=visual needs a local SigLIP / CLIP checkpoint folder")
        require(self.frames_per_clip >= 1 and self.batch_size >= 1, "frames_per_clip",
                "frames_per_clip and batch_size must be >= 1")
        require(0.0 < self.threshold <= 1.0, "threshold", "must be in (0, 1]")
        require(self.cluster_size >= 2, "cluster_size", "must be >= 2")
        require(self.kmeans.metric == "cosine", "kmeans.metric", "dedup compares clips by cosine: use cosine")
        require(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
