"""Colour diversity: monochrome (greyscale, or nearly) and heavily tinted (one hue everywhere:
sepia, night vision, a colour grade gone wrong) frames.

Two scores per frame, on RGB uint8 frames of any size (the analysis frames are enough):
- colourfulness: Hasler and Suesstrunk's metric (2003), sqrt(sd_rg^2 + sd_yb^2) + 0.3 *
  sqrt(mean_rg^2 + mean_yb^2) over the opponent channels rg = R - G, yb = (R + G) / 2 - B. Greyscale
  scores 0; the authors' scale calls under 15 "not colourful" and over 33 "moderately colourful".
- hue_spread: the circular standard deviation of the pixels' hue, in degrees, each pixel weighted
  by its chroma: sqrt(-2 ln R) for R the length of the chroma-weighted mean unit hue vector. Near 0
  when every coloured pixel has the same hue (a tint); natural footage, which leans to one warm
  hue, still spreads over 10 degrees or more. A frame without chroma (greyscale) scores 0.
A clip's score is the median over its frames, so a short coloured title over a tinted clip does not
save it.
"""
from __future__ import annotations

import numpy as np


def colourfulness(frames: np.ndarray) -> np.ndarray:
    """Per frame of uint8 [T, H, W, 3] RGB: Hasler and Suesstrunk's colourfulness."""
    rgb = frames.reshape(len(frames), -1, 3).astype(np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = np.sqrt(rg.std(axis=1) ** 2 + yb.std(axis=1) ** 2)
    offset = np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
    return spread + 0.3 * offset


def hue_spread(frames: np.ndarray) -> np.ndarray:
    """Per frame: the chroma-weighted circular standard deviation of hue, in degrees; 0 without chroma."""
    rgb = frames.reshape(len(frames), -1, 3).astype(np.float32)
    # Opponent-colour plane: its angle is the hue, its length the chroma (the HSV hexagon, smooth).
    a = rgb[..., 0] - 0.5 * (rgb[..., 1] + rgb[..., 2])
    b = (np.sqrt(3) / 2) * (rgb[..., 1] - rgb[..., 2])
    chroma = np.sqrt(a * a + b * b)
    total = chroma.sum(axis=1)
    length = np.sqrt(a.sum(axis=1) ** 2 + b.sum(axis=1) ** 2) / np.maximum(total, 1e-6)
    spread = np.degrees(np.sqrt(-2.0 * np.log(np.clip(length, 1e-12, 1.0))))
    return np.where(total > 0, spread, 0.0)


def colour_scores(frames: np.ndarray) -> dict[str, float]:
    """A clip's medians: {"colourfulness", "hue_spread"}."""
    return {"colourfulness": float(np.median(colourfulness(frames))),
            "hue_spread": float(np.median(hue_spread(frames)))}
