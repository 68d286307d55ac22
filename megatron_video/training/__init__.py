"""Training: the step loop, checkpoints, validation, metrics and plots."""
