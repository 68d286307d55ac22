"""Executors that drive the stages: in-process threads, the project's Ray runner, NeMo Curator."""
