#!/usr/bin/env bash
# Build .venv from the project's own files (CPU machine, Python 3.11 or newer, registries only).
# Order matters: torch 2.13.0 (a local CPU wheel) first and alone, then everything else under
# requirements/constraints.txt so no package can swap it for a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
C=requirements/constraints.txt

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

pip install -c "$C" torch==2.13.0
pip install -c "$C" numpy "packaging>=24.2" einops psutil triton
# megatron-core 0.19.2 declares Python >= 3.12 but runs on 3.11; its own deps are the four above.
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then
  pip install -c "$C" --ignore-requires-python --no-deps megatron-core
else
  pip install -c "$C" megatron-core
fi
# dali: nvidia-dali-cuda130 from PyPI (~240 MB with its nvimgcodec/nvcomp wheels); without a GPU
# its CPU pipeline runs the DALI loader's tests on VP9 clips.
# The serve extra under the GPU machine's serve pins too: tests/cluster/test_gpu_wheels.py checks that
# those pins are the versions the CPU suite ran (a new uvicorn release otherwise breaks it).
pip install -c "$C" -c requirements/gpu-serve.txt -e ".[curate,train,serve,dev,dali]"
# HEBO 0.3.6 pins numpy<1.25 and pymoo==0.6.0 yet runs on numpy 2 / pymoo 0.6.2; the 0.3.2 that
# pip picks instead imports pymoo.factory, which pymoo 0.6 removed. Take 0.3.6 without its pins.
pip install --no-deps hebo==0.3.6
# scenedetect and friends drag in the GUI opencv into the same cv2/ folder: keep only headless 4.x.
pip uninstall -y opencv-python opencv-contrib-python opencv-python-headless >/dev/null 2>&1 || true
pip install -c "$C" --no-deps --force-reinstall opencv-python-headless
# The viewer's browser test (tests/e2e/test_viewer.py) drives Debian's Chromium headless. Installed
# when missing and allowed (root, or sudo without a password); otherwise that one test is skipped.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
  if ! { "${as_root[@]}" apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
         || { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 \
              && "${as_root[@]}" apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; }; then
    echo "install.sh: could not install chromium (needs root or passwordless sudo): the viewer's browser test will skip" >&2
  fi
fi
"$VENV/bin/python" -c 'import torch, megatron.core, cv2, av, webdataset, hydra, nvidia.dali; assert not torch.cuda.is_available() or True; print("venv ok: torch", torch.__version__, "cv2", cv2.__version__)'
