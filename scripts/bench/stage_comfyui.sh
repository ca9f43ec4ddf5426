#!/usr/bin/env bash
# Stage a ComfyUI for the GPU plan on a lent machine (docs/benchmarks.md, "On a lent GPU"): copies
# the parts of a checkout the plan imports (comfy/, comfy_api/, comfy_execution/, utils/ and four
# modules: 14 MB for 0.8.0) into .gpu-plan/comfyui, which git ignores (.git/info/exclude) and the
# device call carries. ComfyUI 0.8.0 imports with the packages such a machine has (torch, transformers,
# safetensors, ...); 0.33.0 also needs comfy-kitchen, whose wheel alone (58 MB) is nearly all a call
# may carry.
#
#     bash scripts/bench/stage_comfyui.sh [CHECKOUT]      # default: ../shared/comfyui/0.8.0
set -euo pipefail
cd "$(dirname "$0")/../.."

source=${1:-../shared/comfyui/0.8.0}
if [ ! -f "$source/comfy/model_management.py" ]; then
  echo "stage_comfyui.sh: $source is not a ComfyUI checkout (no comfy/model_management.py)" >&2
  exit 1
fi
rm -rf .gpu-plan/comfyui
mkdir -p .gpu-plan/comfyui
for part in comfy comfy_api comfy_execution utils comfyui_version.py folder_paths.py latent_preview.py node_helpers.py; do
  if [ -e "$source/$part" ]; then
    cp -r "$source/$part" .gpu-plan/comfyui/
  fi
done
find .gpu-plan -name __pycache__ -prune -exec rm -rf {} +
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/.gpu-plan/" "$exclude" 2>/dev/null || echo "/.gpu-plan/" >> "$exclude"
echo "stage_comfyui.sh: $(du -sh .gpu-plan | cut -f1) in .gpu-plan (ComfyUI $(sed -n 's/__version__ = "\(.*\)"/\1/p' \
  .gpu-plan/comfyui/comfyui_version.py)); carry it: [\".gpu-plan\"]"
