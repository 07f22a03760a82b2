#!/usr/bin/env bash
# The GPU figures docs/benchmarks.md still owes, as one prepared run that fits a 10-minute device call.
#
# Issue 21's GPU target: a DP-SGD step costs at most 2x a non-private step for the seed backbones (ResNet50, VGG19,
# Inception v3) at 128 px, batch 32. dp_step.py times, per backbone, the non-private step (bf16, channels-last on
# CUDA, as fedray trains it), the same in fp32, the GroupNorm model without DP and DP-SGD in the mode fedray picks
# ("auto"); then, with the time left, every per-sample-gradient mode for ResNet50. Logs, JSON and nvidia-smi go to
# $OUT (the device tool's folder that comes back); each step has its own timeout, so a slow one leaves the rest.
#
# On the device machine, after `bash ../shared/gpu/bundle.sh` here (device `run` with carry [".devbundle"]):
#   source .devbundle/setup.sh && bash benchmarks/gpu_owed.sh
# A CPU smoke run of the same script, under a minute:
#   PYTHON=.venv/bin/python MODELS=small_cnn MODES_MODEL=small_cnn IMAGE_SIZE=32 REPEATS=2 OUT=/tmp/owed \
#     bash benchmarks/gpu_owed.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-owed}
PYTHON=${PYTHON:-python}
MODELS=${MODELS:-resnet50,vgg19,inception_v3,resnet18,small_cnn}
MODES_MODEL=${MODES_MODEL:-resnet50}
IMAGE_SIZE=${IMAGE_SIZE:-128}
REPEATS=${REPEATS:-20}
mkdir -p "$OUT"

{ date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"; "$PYTHON" -c 'import torch; print("torch", torch.__version__,
  "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'; } \
  > "$OUT/device.txt" 2>&1

step() {  # step NAME SECONDS ARGS...: dp_step.py with ARGS, its table in NAME.log and its results in NAME.json
  local name=$1 seconds=$2
  shift 2
  timeout "$seconds" "$PYTHON" benchmarks/dp_step.py --image-size "$IMAGE_SIZE" --batch-size 32 \
    --repeats "$REPEATS" --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? ($(date -u +%T))" | tee -a "$OUT/steps.txt"
}

step dp_seed_backbones 330 --models "$MODELS"
step dp_modes 180 --models "$MODES_MODEL" --modes auto,hooks,functorch,ew,ghost,bookkeeping
tail -n 30 "$OUT"/dp_seed_backbones.log "$OUT"/dp_modes.log
