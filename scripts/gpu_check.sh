#!/usr/bin/env bash
# Everything that needs a GPU, in one run: the gpu-marked tests, every benchmark, and the demo on
# the CUDA path. Results land in benchmarks/results/ (and in $OUT/gpu_check.tar.gz when the device
# tool runs it).
#
# usage: scripts/gpu_check.sh [BUNDLE_DIR]
#   BUNDLE_DIR holds the pieces from scripts/make_gpu_bundle.sh (bundle.tar.N + SHA256); its wheels
#   are installed into /tmp/mvideo_site. Or it is a folder of wheels from scripts/make_serve_bundle.sh
#   (sampling and serving only: GPU_CHECK_BENCHES=sample_latency), installed into /tmp/mvideo_serve_site.
#   Without it, the current environment must have them.
# Environment: GPU_CHECK_SKIP_DEMO=1 / GPU_CHECK_SKIP_BENCH=1 skip the demo / the benchmarks;
# GPU_CHECK_TESTS="tests/kernels tests/optim" narrows the gpu tests to those paths ("none": no tests);
# GPU_CHECK_BENCHES="block_kernels fp8_vs_bf16" runs only those benchmarks (and not the curation
# executor rows), so one device call (10 minutes at most) can take one part of the run;
# BENCH_ARGS is passed to every benchmark.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=${OUT:-benchmarks/results/gpu_check}
if [ -n "${OUT:-}" ]; then
  # The device tool brings back at most 8 files from $OUT (the run writes more than a dozen): there,
  # everything goes to a work folder, packed into $OUT/gpu_check.tar.gz when the script exits.
  out=/tmp/gpu_check
  trap 'tar -czf "$OUT/gpu_check.tar.gz" -C "$out" .' EXIT
fi
mkdir -p "$out"
status=0

if [ -n "${1:-}" ] && compgen -G "$1/*.whl" > /dev/null; then
  site=/tmp/mvideo_serve_site
  [ -d "$site" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$1"/*.whl || exit 1
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  ray_path=
elif [ -n "${1:-}" ]; then
  site=/tmp/mvideo_site
  if [ ! -d "$site" ]; then
    cat "$1"/bundle.tar.* > /tmp/mvideo_bundle.tar
    (cd /tmp && sed 's/bundle.tar/mvideo_bundle.tar/' "$1/SHA256" | sha256sum -c -) || exit 1
    mkdir -p /tmp/mvideo_wheels && tar -C /tmp/mvideo_wheels -xf /tmp/mvideo_bundle.tar
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" /tmp/mvideo_wheels/*.whl || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/mvideo_ray_site \
      /tmp/mvideo_wheels/ray/*.whl || exit 1
    mkdir -p /tmp/mvideo_dali_site && tar -C /tmp/mvideo_dali_site -xJf /tmp/mvideo_wheels/dali_site.tar.xz || exit 1
  fi
  # nvidia-cutlass-dsl adds its dsl_packages folder through a .pth file, which a --target site on
  # PYTHONPATH does not run: the folder goes on the path by hand (FlashAttention-4 imports from it).
  export PYTHONPATH="$site:$site/nvidia_cutlass_dsl/dsl_packages:/tmp/mvideo_dali_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  ray_path=/tmp/mvideo_ray_site
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  ray_path=
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

tests=${GPU_CHECK_TESTS:-tests}
if [ "$tests" != none ]; then
  echo "== gpu tests"
  # megatron-energon (CPU-side shard tooling) is not in the GPU bundle: its test module is left out.
  # shellcheck disable=SC2086  # a list of paths
  python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="--import-mode=importlib" $tests \
    --ignore=tests/curator/test_energon.py \
    2>&1 | tee "$out/gpu_tests.log" || status=1
fi

echo "== benchmarks"
[ "${GPU_CHECK_SKIP_BENCH:-0}" = 1 ] || for bench in benchmarks/*.py; do
  # Modules without an entry point are the benchmarks' helpers; report.py renders BENCHMARKS.md. The
  # multi-GPU benchmarks (torchrun, one rank per GPU) run from scripts/multi_gpu_check.sh.
  grep -q '__main__' "$bench" || continue
  case "$(basename "$bench")" in report.py|cp_training_scaling.py|cp_sampling_speedup.py|layout_throughput.py) continue ;; esac
  if [ -n "${GPU_CHECK_BENCHES:-}" ] && [[ " $GPU_CHECK_BENCHES " != *" $(basename "$bench" .py) "* ]]; then
    continue
  fi
  echo "-- $bench"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
  python3 "$bench" ${BENCH_ARGS:-} 2>&1 | tail -n 20 | tee -a "$out/benchmarks.log" || status=1
done
if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ] && [ -z "${GPU_CHECK_BENCHES:-}" ]; then
  echo "-- benchmarks/curation_pipeline.py --executor ray"
  # One actor per GPU running the local executor (a row of its own). Ray (and its dependencies)
  # only for this run, after everything else on the path.
  # shellcheck disable=SC2086
  PYTHONPATH="$PYTHONPATH${ray_path:+:$ray_path}" python3 benchmarks/curation_pipeline.py --executor ray \
    ${BENCH_ARGS:-} 2>&1 | tail -n 20 | tee -a "$out/benchmarks.log" || status=1
  echo "-- benchmarks/curation_pipeline.py --executor parts"
  # One local-executor process per GPU on its part of the inputs (the gpu_node recipe; a row of its own).
  # shellcheck disable=SC2086
  python3 benchmarks/curation_pipeline.py --executor parts ${BENCH_ARGS:-} 2>&1 | tail -n 5 \
    | tee -a "$out/benchmarks.log" || status=1
  echo "-- benchmarks/curation_pipeline.py --timeline"
  # Into a folder of its own (JSON and PNG), never over the table's row.
  # shellcheck disable=SC2086
  python3 benchmarks/curation_pipeline.py --timeline --results-dir "$out/timeline" ${BENCH_ARGS:-} 2>&1 \
    | tail -n 5 | tee -a "$out/benchmarks.log" || status=1
  echo "-- benchmarks/curation_pipeline.py --lengths mixed"
  # Videos of three lengths, so the decoding threads do not run in step (a row of its own).
  # shellcheck disable=SC2086
  python3 benchmarks/curation_pipeline.py --lengths mixed ${BENCH_ARGS:-} 2>&1 | tail -n 5 \
    | tee -a "$out/benchmarks.log" || status=1
fi
cp benchmarks/results/*.json "$out/" 2>/dev/null || true
python3 benchmarks/report.py > /dev/null

if [ "${GPU_CHECK_SKIP_DEMO:-0}" != 1 ]; then
  echo "== demo (CUDA path)"
  start=$(date +%s)
  # The whole log goes to a file as it is written, so a run cut short still shows where it was.
  python3 -m megatron_video.cli.main demo run.output_dir=/tmp/mvideo_demo_gpu run.progress=false \
    > "$out/demo.log" 2>&1 || status=1
  tail -n 40 "$out/demo.log"
  echo "demo wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/demo.log"
  cp /tmp/mvideo_demo_gpu/report.md "$out/demo_report.md" 2>/dev/null || true
fi
exit $status
