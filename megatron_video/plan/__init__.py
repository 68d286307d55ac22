"""`mvideo plan`: per-GPU training memory of a recipe and layout, and layouts that fit a GPU."""
