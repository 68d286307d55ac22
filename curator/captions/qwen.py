"""Qwen2.5-VL from a local checkpoint: videos to text (the detailed caption) and text to text (the
summaries), batched, greedy. Two backends with one interface: vLLM where it imports (GPU serving
engine), else transformers.

The transformers path prepares the video itself, because transformers' Qwen2.5-VL video and image
processors import torchvision: frames are resized and normalised in torch (curator/pixels.py) and
cut into the model's patch layout (`patchify`, the layout of Qwen2VLVideoProcessor.patchify), and
the prompt's one <|video_pad|> is expanded to the video's token count, as the processor does.
"""
from __future__ import annotations

import pathlib
from typing import Protocol

import numpy as np
import torch

from curator.pixels import CLIP_MEAN, CLIP_STD, checkpoint_statistics, normalised_frames

VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def chat(user: str) -> str:
    """Qwen's ChatML turn with the default system prompt, ready for the assistant's answer."""
    return (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


class Captioner(Protocol):
    def describe(self, videos: list[np.ndarray], durations: list[float], prompt: str, max_tokens: int) -> list[str]:
        """One answer per video (uint8 frames [T, H, W, 3] spanning `durations` seconds)."""

    def complete(self, prompts: list[str], max_tokens: int) -> list[str]: ...


def patchify(video: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """[T, C, H, W] (T a multiple of `temporal`, H and W of patch * merge) -> the flat patches
    [grid_t * grid_h * grid_w, C * temporal * patch * patch] and the grid [t, h, w]."""
    frames, channels, height, width = video.shape
    grid = [frames // temporal, height // patch, width // patch]
    patches = video.reshape(grid[0], temporal, channels, grid[1] // merge, merge, patch, grid[2] // merge, merge, patch)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(grid[0] * grid[1] * grid[2], channels * temporal * patch * patch), grid


class TransformersQwenCaptioner:
    def __init__(self, path: str | pathlib.Path, device: torch.device, dtype: torch.dtype,
                 frame_size: tuple[int, int]):
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path), torch_dtype=dtype).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.tokenizer.padding_side = "left"
        vision = self.model.config.vision_config
        self.patch, self.merge, self.temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
        self.mean, self.std = checkpoint_statistics(path, CLIP_MEAN, CLIP_STD)
        self.device, self.dtype, self.frame_size = device, dtype, frame_size

    def video_inputs(self, frames: np.ndarray) -> tuple[torch.Tensor, list[int]]:
        video = normalised_frames(frames, self.frame_size, self.mean, self.std, self.device)
        if pad := -len(video) % self.temporal:
            video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        return patchify(video, self.patch, self.merge, self.temporal)

    @torch.no_grad()
    def _generate(self, texts: list[str], max_tokens: int, **vision) -> list[str]:
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        output = self.model.generate(**batch, **vision, max_new_tokens=max_tokens, do_sample=False)
        return [t.strip() for t in self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:],
                                                               skip_special_tokens=True)]

    def describe(self, videos: list[np.ndarray], durations: list[float], prompt: str, max_tokens: int) -> list[str]:
        patches, grids, texts = [], [], []
        for frames in videos:
            flat, grid = self.video_inputs(frames)
            patches.append(flat)
            grids.append(grid)
            tokens = grid[0] * grid[1] * grid[2] // self.merge ** 2
            texts.append(chat(VIDEO.replace("<|video_pad|>", "<|video_pad|>" * tokens) + prompt))
        # seconds one temporal patch spans: Qwen2.5-VL's temporal positions follow real time
        seconds = [self.temporal * d / len(f) for d, f in zip(durations, videos)]
        return self._generate(texts, max_tokens, pixel_values_videos=torch.cat(patches).to(self.dtype),
                              video_grid_thw=torch.tensor(grids, device=self.device),
                              second_per_grid_ts=torch.tensor(seconds, device=self.device))

    def complete(self, prompts: list[str], max_tokens: int) -> list[str]:
        return self._generate([chat(p) for p in prompts], max_tokens)


class VllmQwenCaptioner:
    """vLLM's engine (continuous batching, paged attention) on the same prompts; it runs the
    checkpoint's own processor, so it needs torchvision, present where vLLM is installed."""

    def __init__(self, path: str | pathlib.Path, dtype: str):
        from vllm import LLM

        self.llm = LLM(model=str(path), dtype=dtype, limit_mm_per_prompt={"video": 1})

    def _generate(self, requests: list, max_tokens: int) -> list[str]:
        from vllm import SamplingParams

        outputs = self.llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_tokens))
        return [o.outputs[0].text.strip() for o in outputs]

    def describe(self, videos: list[np.ndarray], durations: list[float], prompt: str, max_tokens: int) -> list[str]:
        return self._generate([{"prompt": chat(VIDEO + prompt), "multi_modal_data": {"video": v}} for v in videos],
                              max_tokens)

    def complete(self, prompts: list[str], max_tokens: int) -> list[str]:
        return self._generate([chat(p) for p in prompts], max_tokens)
