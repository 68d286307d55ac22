"""FilterConfig: the `curate.filters` section: which filters run, what they analyse, and the
thresholds that turn their stored scores into a clip's pass or fail.

Thresholds are applied to the scores the catalog keeps (curator/filters/verdict.py), so changing
one and running `mvideo curate` again over the same output re-judges every clip without decoding
a frame. The analysis settings (frames read, models) change the scores themselves: they apply to
clips curated after the change.

Defaults: the Summer-22B report (section 3.6) names its filters and its motion table but not every
threshold, so each default here is chosen against the sample footage and the synthetic cases of
tests/curator/test_filters_*.py, and documented in docs/curation_filters.md.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from megatron_video.config.errors import require

FILTERS = ("colour", "stillness", "duplicates", "motion", "faces", "text", "aesthetic")
MOTION_CLASSES = ("good", "bad", "neutral")


@dataclass
class FilterConfig:
    # The filters that run (each a stage of its own); [] curates without any. "aesthetic" also
    # needs `aesthetic_model`: without one it is left out and its scores are null. Without "text"
    # no OCR runs, and the crop stage removes black bars only.
    run: list[str] = field(default_factory=lambda: list(FILTERS))
    # Colour: monochrome below this colourfulness (Hasler-Suesstrunk; greyscale 0, "not colourful"
    # under 15), tinted below this hue spread (circular std of hue, degrees).
    min_colourfulness: float = 10.0
    min_hue_spread: float = 8.0
    # Stillness: rejected when more than this fraction of quarter-second steps show no change
    # (a static shot, or a slideshow: still between jumps).
    max_still_fraction: float = 0.5
    # Near-duplicates: clips whose perceptual hashes all lie within this many bits (of 64) of an
    # earlier clip's (key order) are duplicates of it.
    duplicate_max_distance: int = 8
    # Motion (Farneback flow): the report's table; clips in `reject_motion` classes are rejected.
    min_motion_magnitude: float = 0.01  # frame widths per second: below it, "neutral" (no motion to judge)
    min_uniformity: float = 0.8
    min_consistency: float = 0.5
    reject_motion: list[str] = field(default_factory=lambda: ["bad"])
    # A local BiRefNet checkpoint folder for the foreground/background motion split ("" = none:
    # the split's columns stay null).
    segmentation_model: str = ""
    # Faces (OpenCV Haar cascade) on this many frames; a clip with more faces than max_faces is
    # rejected (-1: no limit; faces are recorded for selection, not judged, by default).
    face_frames: int = 3
    max_faces: int = -1
    # Text (RapidOCR) on this many frames: lines read with at least ocr_min_score count; the crop
    # removes those in the edge bands, and a clip whose remaining text covers more than
    # max_text_coverage of the picture is rejected.
    ocr_frames: int = 2
    ocr_min_score: float = 0.8
    max_text_coverage: float = 0.05
    # Aesthetics: DOVER's ONNX export from a local file ("" = none: the scores stay null, no clip
    # is judged on them); both scores in [0, 1].
    aesthetic_model: str = ""
    min_aesthetic_score: float = 0.25
    min_technical_score: float = 0.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.run) - set(FILTERS))
        require(not unknown, "filters.run", f"unknown filters {unknown}; known: {list(FILTERS)}")
        require(self.min_colourfulness >= 0, "filters.min_colourfulness", "must be >= 0")
        require(0 <= self.min_hue_spread <= 180, "filters.min_hue_spread", "must be in [0, 180] degrees")
        require(0 < self.max_still_fraction <= 1, "filters.max_still_fraction", "must be in (0, 1]")
        require(0 <= self.duplicate_max_distance < 64, "filters.duplicate_max_distance", "must be in [0, 64)")
        require(self.min_motion_magnitude >= 0, "filters.min_motion_magnitude", "must be >= 0")
        require(0 <= self.min_uniformity <= 1, "filters.min_uniformity", "must be in [0, 1]")
        require(0 <= self.min_consistency <= 1, "filters.min_consistency", "must be in [0, 1]")
        require(set(self.reject_motion) <= set(MOTION_CLASSES), "filters.reject_motion",
                f"each must be one of {MOTION_CLASSES}")
        require(self.face_frames >= 1, "filters.face_frames", "must be >= 1")
        require(self.max_faces >= -1, "filters.max_faces", "must be >= -1 (-1: no limit)")
        require(self.ocr_frames >= 1, "filters.ocr_frames", "must be >= 1")
        require(0 < self.ocr_min_score < 1, "filters.ocr_min_score", "must be in (0, 1)")
        require(0 <= self.max_text_coverage <= 1, "filters.max_text_coverage", "must be in [0, 1]")
        require(0 <= self.min_aesthetic_score <= 1, "filters.min_aesthetic_score", "must be in [0, 1]")
        require(0 <= self.min_technical_score <= 1, "filters.min_technical_score", "must be in [0, 1]")
        require(not self.segmentation_model or (pathlib.Path(self.segmentation_model) / "config.json").is_file(),
                "filters.segmentation_model", f"'{self.segmentation_model}' is not a local BiRefNet checkpoint "
                                              "folder (no config.json); leave it empty to skip the split")
        require(not self.aesthetic_model or pathlib.Path(self.aesthetic_model).is_file(), "filters.aesthetic_model",
                f"'{self.aesthetic_model}' is not a local DOVER ONNX file; leave it empty to skip aesthetics")

    def runs(self, name: str) -> bool:
        """Whether filter `name` runs (the aesthetic one only with a model)."""
        return name in self.run and (name != "aesthetic" or bool(self.aesthetic_model))
