#!/usr/bin/env bash
# The wheels the GPU test machine (Python 3.12, no network) lacks for sampling and serving:
# requirements/gpu-sample.txt (megatron-core, Hydra, PyAV, ...; ~39 MB) and requirements/gpu-serve.txt
# (`mvideo serve`: FastAPI, uvicorn, Prometheus client; ~3.6 MB), in one folder small enough to travel
# with one `device` call (64 MiB per call, the working tree included), so benchmarks/sample_latency.py
# (sampling and the server under load) needs no other bundle. scripts/make_gpu_bundle.sh puts the
# same wheels in its bundle.
#
# usage: scripts/make_serve_bundle.sh [OUTDIR]     (default .whl/serve; emptied first)
# On the GPU machine, scripts/gpu_check.sh OUTDIR (or multi_gpu_check.sh N OUTDIR) installs them with
# pip --target into a site first on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-.whl/serve}")
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
rm -rf "$out" && mkdir -p "$out"
shopt -s nullglob
# Wheels only, but for the one package that ships only as an sdist (antlr4, omegaconf's parser).
python3 -m pip download -q --no-deps "${plat[@]}" --no-binary=antlr4-python3-runtime -d "$out" \
  -r requirements/gpu-sample.txt -r requirements/gpu-serve.txt 2>&1 | grep -v "^WARNING" || true
for sdist in "$out"/*.tar.gz; do
  python3 -m pip wheel -q --no-deps -w "$out" "$sdist" 2>&1 | grep -v "^WARNING" || true
  rm "$sdist"
done
expected=$(cat requirements/gpu-sample.txt requirements/gpu-serve.txt | grep -c -E '^[A-Za-z]')
found=$(find "$out" -name '*.whl' | wc -l)
[ "$found" -eq "$expected" ] || { echo "expected $expected wheels in $out, found $found" >&2; exit 1; }
du -sh "$out"
