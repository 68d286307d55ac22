"""Curation stages, one per file, each a small dataclass following curator.stages.base.Stage."""
