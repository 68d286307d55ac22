"""Optimisation (Summer-22B 4.3-4.8): sphere AdamW, muP rules and schedule, muP-band monitor,
post-hoc EMA, coordinate check and HEBO search over layer-wise LR multipliers.

Submodules are imported where used (`from megatron_video.optim.builder import build_optimizer`):
the config section must import without megatron-core, matplotlib or HEBO.
"""
