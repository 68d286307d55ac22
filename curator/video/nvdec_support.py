"""Which video streams the NVDEC path takes, decided per input from the probe, before any decode.

NVDEC itself decodes more than this (MPEG-2, MPEG-4 part 2, VC-1, AV1, 10-bit and 4:4:4 HEVC), but
the path through PyNvVideoCodec's demuxer, its frame-index seeks and its RGB output failed on such
files on an H200 (error 300 for MS-MPEG4 and MPEG-4 part 2 in AVI, `PyNvVCExceptionUnsupported`
for 10-bit and 4:4:4 H.264, seek errors in AVI containers): what is not on these lists decodes on
the CPU instead, where PyAV takes everything FFmpeg does. `curate.nvdec_codecs` widens or narrows
the codec list for a driver and GPU where more was verified.
"""
from __future__ import annotations

# 8-bit 4:2:0, full or limited range: what the decoder's interleaved RGB output handles.
PIXEL_FORMATS = ("yuv420p", "yuvj420p")
# FFmpeg's demuxer names (PyAV's `container.format.name`) of containers with sample-accurate indexes.
CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
# NVDEC's largest coded frame per codec on Ampere and Hopper (NVIDIA's Video Codec SDK support
# matrix), and its smallest for every codec.
MAX_SIZE = {"h264": (4096, 4096), "hevc": (8192, 8192), "vp9": (8192, 8192), "av1": (8192, 8192)}
MIN_WIDTH, MIN_HEIGHT = 48, 16


def nvdec_refusal(codec: str, pix_fmt: str | None, width: int, height: int, container: str,
                  codecs: list[str]) -> str:
    """Why the NVDEC path cannot take this stream, or '' when it can."""
    if codec not in codecs:
        return f"codec {codec} is not in curate.nvdec_codecs {sorted(codecs)}"
    if pix_fmt not in PIXEL_FORMATS:
        return f"pixel format {pix_fmt} (NVDEC path takes 8-bit 4:2:0 only)"
    if container not in CONTAINERS:
        return f"container {container} (NVDEC path takes MP4/MOV and Matroska/WebM only)"
    max_width, max_height = MAX_SIZE.get(codec, (4096, 4096))
    if not (MIN_WIDTH <= width <= max_width and MIN_HEIGHT <= height <= max_height):
        return f"size {width}x{height} outside NVDEC's {MIN_WIDTH}x{MIN_HEIGHT}..{max_width}x{max_height} for {codec}"
    return ""
