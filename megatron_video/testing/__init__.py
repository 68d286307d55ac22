"""Helpers for the project's tests that other projects can reuse (multi-process gloo runs)."""
