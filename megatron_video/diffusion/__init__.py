"""Flow-matching objective and samplers for VideoDiT."""
from megatron_video.diffusion.flow_matching import FlowMatching, resolution_shift
from megatron_video.diffusion.sampler import sample

__all__ = ["FlowMatching", "resolution_shift", "sample"]
