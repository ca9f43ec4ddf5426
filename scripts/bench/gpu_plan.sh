#!/usr/bin/env bash
# The GPU plan in one command, on a machine that has a copy of this repository and a python with
# torch and CUDA, but none of our virtual environments (docs/benchmarks.md, "On a lent GPU"):
#
#     bash scripts/bench/gpu_plan.sh [--budget 480] [other scripts/bench/bench.py options]
#
# 1. picks the python: $PYTHON, else python3; it must import torch with a CUDA device, safetensors
#    and numpy (what vace_core needs): otherwise it stops here, saying which is missing;
# 2. ComfyUI, for the decode and low-VRAM sections: $COMFYUI_DIR, else .gpu-plan/comfyui (staged
#    with scripts/bench/stage_comfyui.sh); its import is tried once, and without one (or when it
#    fails, the error shown) those sections are listed as skipped;
# 3. runs scripts/bench/bench.py --device cuda with a budget of 480 s unless one is given, writing
#    the results and the log (plan.log) into $OUT when set (the folder a lent machine sends back),
#    else bench/. Its exit status is bench.py's.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT:-bench}
mkdir -p "$OUT_DIR"
say() { echo "gpu_plan.sh: $*" >&2; }

if ! command -v "$PYTHON" >/dev/null; then
  say "no $PYTHON here: set PYTHON to a python with torch and CUDA"
  exit 3
fi
if ! "$PYTHON" - <<'EOF'
import importlib.util
import sys

missing = [name for name in ("torch", "safetensors", "numpy") if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"gpu_plan.sh: {sys.executable} lacks {', '.join(missing)} (the plan needs torch with CUDA, "
             "safetensors and numpy)")
import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_plan.sh: torch {torch.__version__} in {sys.executable} sees no CUDA device")
print(f"gpu_plan.sh: {sys.executable}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}", file=sys.stderr)
EOF
then
  exit 3
fi

comfyui=()
COMFYUI=${COMFYUI_DIR:-.gpu-plan/comfyui}
if [ -f "$COMFYUI/comfy/model_management.py" ]; then
  # the import the decode and low-VRAM sections make, tried once here so that a missing package
  # shows as one clear line and costs those two sections only
  if PYTHONDONTWRITEBYTECODE=1 "$PYTHON" - "$COMFYUI" <<'EOF'
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, "scripts/bench")
import bench_common

with tempfile.TemporaryDirectory() as base:
    try:
        comfy = bench_common.import_comfy(Path(sys.argv[1]), Path(base), flags=(), sd="comfy.sd")
    except Exception as error:
        sys.exit(f"gpu_plan.sh: ComfyUI in {sys.argv[1]} does not import here ({type(error).__name__}: {error}); "
                 "the decode and lowvram sections are skipped")
print(f"gpu_plan.sh: ComfyUI {comfy.version} from {sys.argv[1]}", file=sys.stderr)
EOF
  then
    comfyui=(--comfyui "$COMFYUI")
  fi
else
  say "no ComfyUI ($COMFYUI): the decode and lowvram sections are skipped (scripts/bench/stage_comfyui.sh stages one)"
fi

args=("$@")
case " ${args[*]-} " in
  *" --budget "*) ;;
  *) args+=(--budget 480) ;;
esac
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
"$PYTHON" scripts/bench/bench.py --device cuda --out "$OUT_DIR" "${comfyui[@]}" "${args[@]}" 2>&1 \
  | tee "$OUT_DIR/plan.log"
