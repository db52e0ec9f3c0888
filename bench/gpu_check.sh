#!/usr/bin/env bash
# GPU check: one short script (under 5 minutes on one GPU) that the toolkit's GPU paths work here.
#
#   bash bench/gpu_check.sh               # on a machine with a CUDA GPU
#   bash bench/gpu_check.sh --cpu-smoke   # tiny sizes on the CPU: checks the script's logic only
#   KEEP=1 bash bench/gpu_check.sh        # keep the temporary folder (data, checkpoints, runs)
#
# Parts (each one is run even when an earlier one failed; a summary lists them all):
#   1. environment: nvidia-smi, torch / CUDA / cuDNN / NCCL versions, GPU names, bf16 support
#   2. phantom data: films split into train/val/test in a temporary folder
#   3. keypoint training, convnext_small_custom + simcc_2d at 224, 50 steps of batch 32, with
#      --amp auto (bf16 where native, else fp16) and with --amp off: images/s and peak memory
#      3b. MambaVision-T (the optional mambavision package), 10 steps with --amp auto, where the
#      package imports (a SKIP otherwise, with the reason)
#   4. with 2 or more GPUs: the keypoint trainer under torchrun (DDP, NCCL) on 2 GPUs
#   5. a short YOLO training (yolo12n.yaml, 3 epochs) on the phantom split; with 2+ GPUs
#      also one epoch with --device 0,1 (Ultralytics' own DDP)
#   6. end-to-end prediction latency on the GPU (bench/predict_latency.py, when present)
# Exit code: 0 when every part passed, 1 otherwise.
set -u -o pipefail

cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
SMOKE=0
case "${1:-}" in
  --cpu-smoke) SMOKE=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--cpu-smoke]" >&2; exit 2 ;;
esac

TMP=$(mktemp -d -t hipkp_gpu_check.XXXXXX)
if [ "${KEEP:-0}" = 1 ]; then
  echo "temporary folder (kept): $TMP"
else
  trap 'rm -rf "$TMP"' EXIT
fi
export MPLBACKEND=Agg YOLO_OFFLINE=1 YOLO_CONFIG_DIR="$TMP/ultralytics"
mkdir -p "$YOLO_CONFIG_DIR"

SMOKE_FLAG=()
if [ "$SMOKE" = 1 ]; then
  SMOKE_FLAG=(--cpu-smoke)
  DEV=cpu; YOLO_DEV=cpu; YOLO_ARGS=(--epochs 1 --imgsz 64 --batch 4 --nbs 4 --workers 0)
  LAT_ARGS=(--device cpu --images 2 --batch_size 2 --size 256 --imgsz 64 --repeats 1)
  NGPU=0
else
  DEV=cuda; YOLO_DEV=0; YOLO_ARGS=(--epochs 3 --imgsz 640 --batch 16 --nbs 16 --workers 8)
  LAT_ARGS=(--device cuda --images 16 --batch_size 8 --size 512 --imgsz 640 --repeats 3)
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
fi

RESULTS=()
FAILED=0
T_START=$SECONDS

# part NAME LIMIT_SECONDS COMMAND...: run, time, and record PASS/FAIL (a timeout is a failure)
part() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== $name ==="
  local t0=$SECONDS
  timeout --kill-after=15 "$limit" "$@"
  local rc=$?
  local dt=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then
    RESULTS+=("PASS  $name (${dt}s)")
  else
    [ $rc -eq 124 ] && echo "(timed out after ${limit}s)"
    RESULTS+=("FAIL  $name (exit $rc, ${dt}s)")
    FAILED=1
  fi
  return $rc
}

skip() {
  echo
  echo "=== $1 ==="
  echo "skipped: $2"
  RESULTS+=("SKIP  $1 ($2)")
}

# ---------------------------------------------------------------- 1. environment
if [ "$SMOKE" = 1 ]; then
  skip "nvidia-smi" "--cpu-smoke"
elif command -v nvidia-smi > /dev/null; then
  part "nvidia-smi" 30 nvidia-smi --query-gpu=index,name,driver_version,memory.total,utilization.gpu,temperature.gpu \
    --format=csv
else
  echo "nvidia-smi not found"
  RESULTS+=("FAIL  nvidia-smi (not found)")
  FAILED=1
fi
part "environment (torch, CUDA, GPUs, bf16)" 120 "$PY" bench/gpu_check.py env ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}

# ---------------------------------------------------------------- 2. data
part "phantom data" 180 "$PY" bench/gpu_check.py data --out "$TMP/data" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}
SPLIT="$TMP/data/split"

# ---------------------------------------------------------------- 3. keypoint training, AMP vs fp32
part "keypoint training: AMP vs fp32" 300 \
  "$PY" bench/gpu_check.py train --data "$SPLIT" --out "$TMP/kp" --json "$TMP/kp.json" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}
KP_CKPT="$TMP/kp/gpu_check_auto_best.pth"

# ---------------------------------------------------------------- 3b. MambaVision (optional package)
echo
echo "=== MambaVision-T training (optional mambavision package) ==="
t0=$SECONDS
timeout --kill-after=15 300 "$PY" bench/gpu_check.py mamba --data "$SPLIT" --out "$TMP/mamba" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}
rc=$?
if [ $rc -eq 0 ]; then
  RESULTS+=("PASS  MambaVision-T training ($((SECONDS - t0))s)")
elif [ $rc -eq 3 ]; then
  RESULTS+=("SKIP  MambaVision-T training (the mambavision package does not import here)")
else
  RESULTS+=("FAIL  MambaVision-T training (exit $rc, $((SECONDS - t0))s)")
  FAILED=1
fi

# ---------------------------------------------------------------- 4. DDP on 2 GPUs
if [ "$NGPU" -ge 2 ]; then
  part "keypoint training under torchrun, 2 GPUs (DDP, NCCL)" 240 \
    "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 train_hip_crop_keypoints.py \
    --data_dir "$SPLIT" --model_name convnext_small_custom --head_type simcc_2d --input_size 224 \
    --batch_size 32 --epochs 1000 --max_steps 20 --val_every 1000 --out "$TMP/ddp" --log_dir "$TMP/ddp/logs" \
    --exp_name gpu_check_ddp --no-progress
else
  skip "keypoint training under torchrun (DDP)" "needs 2 GPUs, found $NGPU"
fi

# ---------------------------------------------------------------- 5. YOLO
part "YOLO training (yolo12n.yaml)" 300 \
  "$PY" train_yolo.py --data "$SPLIT/data.yaml" --model yolo12n.yaml "${YOLO_ARGS[@]}" --device "$YOLO_DEV" \
  --project "$TMP/runs" --name gc_yolo --weights_dir "$TMP/weights" --exist_ok
if [ "$NGPU" -ge 2 ]; then
  part "YOLO training on 2 GPUs (--device 0,1, Ultralytics DDP)" 300 \
    "$PY" train_yolo.py --data "$SPLIT/data.yaml" --model yolo12n.yaml --epochs 1 --imgsz 640 --batch 32 --nbs 32 \
    --workers 4 --device 0,1 --project "$TMP/runs" --name gc_yolo_ddp --weights_dir "$TMP/weights" --exist_ok
else
  skip "YOLO training on 2 GPUs" "needs 2 GPUs, found $NGPU"
fi

# ---------------------------------------------------------------- 6. prediction latency
if [ -f bench/predict_latency.py ]; then
  LAT_MODELS=()
  [ -f "$KP_CKPT" ] && LAT_MODELS+=(--kp_path "$KP_CKPT")
  [ -f "$TMP/weights/gc_yolo.pt" ] && LAT_MODELS+=(--yolo_weights "$TMP/weights/gc_yolo.pt")
  part "end-to-end prediction latency" 240 "$PY" bench/predict_latency.py ${LAT_MODELS[@]+"${LAT_MODELS[@]}"} "${LAT_ARGS[@]}"
else
  skip "end-to-end prediction latency" "bench/predict_latency.py not found"
fi

# ---------------------------------------------------------------- summary
echo
echo "=== summary ($((SECONDS - T_START))s$([ "$SMOKE" = 1 ] && echo ", --cpu-smoke: figures mean nothing")) ==="
printf '%s\n' "${RESULTS[@]}"
if [ -f "$TMP/kp.json" ]; then
  "$PY" - "$TMP/kp.json" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1])):
    print(f"  keypoint training --amp {r['amp']:>4}: {r['images_per_s']:8.1f} images/s, peak {r['peak_gib']:.2f} GiB")
EOF
fi
exit $FAILED
