#!/usr/bin/env bash
# One short GPU benchmark run (both scripts, sensible CUDA settings; the light network too), under ~6 minutes on a recent GPU.
# JSON records go to $OUT when set (else bench/results/); the console log goes there too.
#   bash bench/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT_DIR=${OUT:-bench/results}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
run() { echo "+ $*" | tee -a "$LOG"; timeout "$1" "${@:2}" 2>&1 | tee -a "$LOG"; echo "exit ${PIPESTATUS[0]}" | tee -a "$LOG"; }

$PY -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>&1 | tee "$LOG"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG" || true

# Training: bf16 autocast + channels_last as "ours", fp32/fp16 variants and the reference interleaved.
run 150 $PY bench/train_step.py --device cuda --size 256 --batch 4 --steps 30 --warmup 5 \
  --precision bf16-mixed --channels-last --also "32-true,32-true+channels_last,16-mixed+channels_last,bf16-mixed" \
  --loader-workers 0,2,4 --loader-batches 20 --compare-curves 20 --out-dir "$OUT_DIR"
# torch.compile of both networks (compilation takes a minute or so; the timed steps come after it).
run 150 $PY bench/train_step.py --device cuda --size 256 --batch 4 --steps 20 --warmup 3 \
  --precision bf16-mixed --channels-last --compile --loader-workers "" --no-flops --out-dir "$OUT_DIR"
# Inference at all sizes; onnxruntime-* need onnxruntime-gpu (reported unavailable otherwise).
run 120 $PY bench/inference.py --device cuda --sizes 256,512,1024,1920x1080 --repeats 10 --warmup 3 \
  --runtimes eager-fp32-cl,eager-bf16-cl,torchscript,onnxruntime-fp32,onnxruntime-fp16 --out-dir "$OUT_DIR"
# The light network (model=light): the real-time candidate, at the sizes video uses.
run 90 $PY bench/inference.py --device cuda --model light --sizes 1024,1920x1080 --repeats 10 --warmup 3 \
  --runtimes eager-fp32-cl,eager-bf16-cl,onnxruntime-fp32,onnxruntime-fp16 --out-dir "$OUT_DIR"
