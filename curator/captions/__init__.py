"""Hierarchical captions of curated clips (Summer-22B 3.7): detailed, short and three-word, from a
local Qwen2.5-VL, written as the `captions` catalog feature set."""
