"""CaptionConfig: the `caption` section of `mvideo caption` (post-curation, over a curated output)."""
from __future__ import annotations

from dataclasses import dataclass

from megatron_video.config import require

BACKENDS = ("auto", "transformers", "vllm")


@dataclass
class CaptionConfig:
    root: str = ""  # a curated output (its catalog and shards)
    model: str = ""  # a local Qwen2.5-VL checkpoint folder (weights, config, tokenizer)
    backend: str = "auto"  # auto: vLLM when it imports, else transformers
    output: str = "captions"  # the feature set written
    # The level also written as `caption`, the column the training loader takes its text from.
    training_text: str = "detailed"
    frames_per_clip: int = 16  # spread over the clip; Qwen2.5-VL pairs frames (temporal patch 2)
    frame_height: int = 224  # multiples of 28 (patch 14 x merge 2)
    frame_width: int = 392
    batch_size: int = 8  # clips per generate call
    dtype: str = "bfloat16"  # on GPUs; CPUs run float32
    device: str = "auto"
    # The detailed caption sees the video; the short and three-word ones summarise it ({detailed}),
    # so the three levels describe the same content.
    detailed_prompt: str = ("Describe this video in detail: the subjects, their appearance and actions, "
                            "the setting, the camera motion and the lighting.")
    short_prompt: str = "Summarise this video description in one sentence of at most 20 words:\n{detailed}"
    three_word_prompt: str = ("Summarise this video description in exactly three words, subject-verb-object "
                              "style, such as 'man riding horse':\n{detailed}")
    detailed_tokens: int = 256
    short_tokens: int = 48
    three_word_tokens: int = 8

    def __post_init__(self) -> None:
        require(self.training_text in ("detailed", "short"), "training_text", "must be detailed or short")
        require(self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}")
        for key in ("frame_height", "frame_width"):
            require(getattr(self, key) >= 28 and getattr(self, key) % 28 == 0, key,
                    "must be a positive multiple of 28 (Qwen2.5-VL patch 14 x merge 2)")
        require(self.frames_per_clip >= 2 and self.frames_per_clip % 2 == 0, "frames_per_clip",
                "must be even and >= 2 (Qwen2.5-VL's temporal patch is 2 frames)")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.dtype in ("bfloat16", "float16", "float32"), "dtype", "must be bfloat16, float16 or float32")
        require("{detailed}" in self.short_prompt, "short_prompt", "must contain {detailed}")
        require("{detailed}" in self.three_word_prompt, "three_word_prompt", "must contain {detailed}")
        require(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
