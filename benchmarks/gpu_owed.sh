#!/usr/bin/env bash
# The GPU figures docs/benchmarks.md still owes, as one prepared run that fits a 10-minute device call.
#
# Issue 21's GPU target: a DP-SGD step costs at most 2x a non-private step for the seed backbones (ResNet50, VGG19,
# Inception v3) at 128 px, batch 32. dp_step.py times, per backbone, the non-private step (bf16, channels-last on
# CUDA, as fedray trains it), the same in fp32, the GroupNorm model without DP and DP-SGD in the mode fedray picks
# ("auto"); then every per-sample-gradient mode for ResNet50. One dp_step.py process per backbone, each under its own
# timeout (dp_step.py writes its table and JSON only at its end, so a slow backbone loses only its own figures);
# into $OUT (the device tool's folder that comes back, at most 8 files) go four: device.txt (nvidia-smi, torch),
# steps.txt (each step's exit), tables.md (every step's table) and dp_gpu.json (every step's results by name).
# About 8 minutes at most.
#
# On the device machine, after `bash ../shared/gpu/bundle.sh` here (device `run` with carry [".devbundle"]):
#   source .devbundle/setup.sh && bash benchmarks/gpu_owed.sh
# A CPU smoke run of the same script, under a minute:
#   PYTHON=.venv/bin/python MODELS="small_cnn:60 resnet18:60" MODES_MODEL=small_cnn:60 IMAGE_SIZE=32 REPEATS=2 \
#     OUT=/tmp/owed bash benchmarks/gpu_owed.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-owed}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
# backbone:seconds, in the order they run (the seed backbones first)
MODELS=${MODELS:-resnet50:90 vgg19:110 inception_v3:90 resnet18:45 small_cnn:30}
MODES_MODEL=${MODES_MODEL:-resnet50:120}
IMAGE_SIZE=${IMAGE_SIZE:-128}
REPEATS=${REPEATS:-20}
mkdir -p "$OUT"
WORK=$(mktemp -d)  # each step's log and JSON; $OUT gets them combined

{ date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"; "$PYTHON" -c 'import torch; print("torch", torch.__version__,
  "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'; } \
  > "$OUT/device.txt" 2>&1

step() {  # step NAME SECONDS ARGS...: dp_step.py with ARGS, its output in NAME.log and its results in NAME.json
  local name=$1 seconds=$2
  shift 2
  timeout "$seconds" "$PYTHON" benchmarks/dp_step.py --image-size "$IMAGE_SIZE" --batch-size 32 \
    --repeats "$REPEATS" --json "$WORK/$name.json" "$@" > "$WORK/$name.log" 2>&1
  echo "$name: exit $? ($(date -u +%T))" | tee -a "$OUT/steps.txt"
}

for entry in $MODELS; do
  step "dp_${entry%%:*}" "${entry##*:}" --models "${entry%%:*}"
done
step "dp_modes_${MODES_MODEL%%:*}" "${MODES_MODEL##*:}" --models "${MODES_MODEL%%:*}" \
  --modes auto,hooks,functorch,ew,ghost,bookkeeping
for log in "$WORK"/dp_*.log; do  # the tables (and the last lines of a step that failed)
  echo "## $(basename "$log" .log)"; grep -v '^USDT\|^ERROR:.*gpuGetDeviceCount' "$log" | tail -n 15; echo
done > "$OUT/tables.md"
"$PYTHON" - "$WORK" "$OUT/dp_gpu.json" <<'PY'
import json, pathlib, sys
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.write_text(json.dumps({p.stem: json.loads(p.read_text()) for p in sorted(work.glob("dp_*.json"))}, indent=1))
PY
cat "$OUT/tables.md"
