"""Inference: sampling videos from a trained checkpoint."""
