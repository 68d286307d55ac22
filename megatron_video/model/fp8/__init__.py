"""FP8 training: Transformer Engine's recipes where TE is installed, a native `torch._scaled_mm`
linear elsewhere; `settings` (no heavy imports) is what the configuration validates against."""
