#!/usr/bin/env bash
# Everything that needs several GPUs of one host (issue 29), in priority order so that a run cut
# short still brings back the most: the NCCL equivalence tests, then cp_training_scaling,
# cp_sampling_speedup, layout_throughput (the 7B layouts; 8 GPUs), then curation on every GPU.
# Each part runs under `timeout` and the script goes on past a failure; a part that would start
# with less than 30 s of the budget left is skipped and named in the summary.
#
# usage: scripts/multi_gpu_check.sh N [WHEEL_DIR...]
#   N           GPUs to use (torchrun's --nproc-per-node; the tests use what they need, 2 or 4)
#   WHEEL_DIR   folders of wheels installed into /tmp/mvideo_site first (each once per machine): at least
#               megatron-core, hydra-core, omegaconf, antlr4, av, webdataset, braceexpand (the lead's
#               .whl/a; scripts/make_serve_bundle.sh's .whl/serve has them, and the serve wheels)
# Environment:
#   MULTI_GPU_PARTS     which parts, in this order (default: tests training sampling layouts curation)
#   MULTI_GPU_BUDGET_S  seconds for the whole run (default 570: the device tool stops a command at 600)
#   MULTI_GPU_BENCH_ARGS  flags for every benchmark (e.g. --tiny: the CPU dry run of the whole script)
#   MVIDEO_COMMIT       the commit the results name (a copy of the tree without its history)
# Results: $OUT/multi_gpu_check.tar.gz (every log and JSON), $OUT/summary.txt and the benchmarks'
# JSONs beside it; without $OUT, benchmarks/results/multi_gpu_check/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
gpus=${1:?usage: scripts/multi_gpu_check.sh N [WHEEL_DIR...]}
shift
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
start=$(date +%s)
budget=${MULTI_GPU_BUDGET_S:-570}
parts=${MULTI_GPU_PARTS:-tests training sampling layouts curation}

if [ -n "${OUT:-}" ]; then
  # The device tool brings back at most 8 files: logs go into a tarball, the summary and the
  # benchmarks' JSONs beside it.
  work=/tmp/multi_gpu_check
  trap 'tar -czf "$OUT/multi_gpu_check.tar.gz" -C "$work" .; cp "$work"/summary.txt "$work"/results/*.json "$OUT/" 2>/dev/null' EXIT
else
  work=benchmarks/results/multi_gpu_check
fi
mkdir -p "$work/results"
summary=$work/summary.txt
: > "$summary"

site=/tmp/mvideo_site
# Each folder once per machine (a later call may bring other folders into the same site).
for dir in "$@"; do
  marker="$site/.installed_$(basename "$dir")"
  [ -f "$marker" ] && continue
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$dir"/*.whl || exit 1
  touch "$marker"
done
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$work/gpus.txt"
nvidia-smi topo -m > "$work/topology.txt" 2>&1 || true

# run NAME LIMIT_S COMMAND...: COMMAND under `timeout` (its whole process group), log to NAME.log.
run() {
  local name=$1 limit=$2 left began rc
  shift 2
  left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -lt 30 ]; then
    echo "$name: skipped (budget of ${budget}s spent)" | tee -a "$summary"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)"
  began=$(date +%s)
  timeout --kill-after=20 "$limit" "$@" > "$work/$name.log" 2>&1
  rc=$?
  tail -n 25 "$work/$name.log"
  echo "$name: exit $rc after $(( $(date +%s) - began ))s$([ $rc = 124 ] && echo ' (timed out)')" | tee -a "$summary"
}

bench() {  # bench NAME LIMIT_S SCRIPT ARGS...: a benchmark on N ranks under torchrun
  local name=$1 limit=$2 script=$3
  shift 3
  # shellcheck disable=SC2086  # MULTI_GPU_BENCH_ARGS is a list of flags
  run "$name" "$limit" python3 -m torch.distributed.run --standalone --nproc-per-node "$gpus" "$script" \
    --results-dir "$work/results" ${MULTI_GPU_BENCH_ARGS:-} "$@"
}

for part in $parts; do
  case $part in
    tests)
      # NCCL equals one process: CP (ulysses, ring, usp), PP (1F1B, interleaved) and the 4-way mixes
      # first, then TP/SP, DP + distributed optimizer (builder), CP/CFG sampling, the dist-checkpoint
      # resharding and the trainer's exact resume. Each needs 2 or 4 GPUs (skipped, and said, below that).
      run tests 560 python3 -m pytest -m gpu -q -rs -p no:cacheprovider -o addopts="--import-mode=importlib" \
        -o timeout=300 tests/parallel/test_layouts_equal_one_process.py tests/model/test_tensor_parallel.py \
        tests/optim/test_builder_distributed.py tests/inference/test_parallel_sampling.py \
        tests/training/test_dist_checkpoint.py tests/training/test_trainer_distributed.py ;;
    training) bench cp_training_scaling 300 benchmarks/cp_training_scaling.py ;;
    sampling) bench cp_sampling_speedup 240 benchmarks/cp_sampling_speedup.py ;;
    layouts) bench layout_throughput 360 benchmarks/layout_throughput.py ;;
    curation)
      # One local-executor process per GPU, then the Ray runner's actors over every GPU (Ray from
      # gpu_check.sh's bundle site when it is there). Both need the curation wheels (make_gpu_bundle.sh).
      run curation_parts 240 python3 benchmarks/curation_pipeline.py --executor parts --results-dir "$work/results"
      PYTHONPATH="$PYTHONPATH:/tmp/mvideo_ray_site" run curation_ray 240 python3 benchmarks/curation_pipeline.py \
        --executor ray --results-dir "$work/results" ;;
    *) echo "unknown part '$part' (tests training sampling layouts curation)" | tee -a "$summary" ;;
  esac
done
echo "== summary ($(( $(date +%s) - start ))s)"
cat "$summary"
! grep -q "exit [1-9]" "$summary"
