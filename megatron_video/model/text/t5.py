"""UMT5 / T5 encoder states (Wan uses umt5-xxl, 4096-d) from a local transformers checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

from megatron_video.model.text.base import encode_padded


class T5TextEncoder:
    def __init__(self, path: str | Path, max_len: int = 512, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

        path = str(path)
        config = AutoConfig.from_pretrained(path)
        model_class = UMT5EncoderModel if config.model_type == "umt5" else T5EncoderModel
        self.device = torch.device(device)
        self.model = model_class.from_pretrained(path, torch_dtype=dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.max_len = max_len
        self.dim = config.d_model
        self.identity = f"{config.model_type}:{Path(path).resolve()}:max_len={max_len}:{dtype}"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_padded(self.tokenizer, self.model, prompts, self.max_len, self.device)
