"""Video I/O backends: PyAV (CPU decode, libx264 encode) and PyNvVideoCodec (NVDEC, NVENC)."""
