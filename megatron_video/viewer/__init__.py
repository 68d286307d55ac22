"""Seeing the dataset: `mvideo view` (a localhost web page) and `mvideo preview` (a grid video)."""
