"""VideoDiT, its configuration, and the latent codecs and text encoders that feed it."""
from megatron_video.model.config import VideoDiTConfig, load_preset
from megatron_video.model.flops import model_flops
from megatron_video.model.model import VideoDiT, build_model, build_model_chunks, megatron_config
from megatron_video.model.tp_layout import gather_canonical_grads, shard_canonical_state

__all__ = ["VideoDiT", "VideoDiTConfig", "build_model", "build_model_chunks", "gather_canonical_grads",
           "load_preset", "megatron_config", "model_flops", "shard_canonical_state"]
