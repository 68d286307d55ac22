"""Text encoders: prompts -> token states [B, L, dim] and a mask [B, L] (True = real token)."""
from megatron_video.model.text.base import TextEncoder
from megatron_video.model.text.cache import CachedTextEncoder
from megatron_video.model.text.minilm import MiniLMTextEncoder
from megatron_video.model.text.t5 import T5TextEncoder

__all__ = ["CachedTextEncoder", "MiniLMTextEncoder", "T5TextEncoder", "TextEncoder"]
