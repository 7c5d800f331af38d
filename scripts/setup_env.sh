#!/usr/bin/env bash
# Create .venv and install everything HPViT-D2 needs. Safe to re-run: a finished setup is
# recorded in .venv/.hpvit-setup and a second run only checks it (seconds).
#
# Variables:
#   PYTHON        interpreter for the venv            (default: python3.11)
#   VENV          venv directory                      (default: .venv)
#   TORCH_SPEC    torch/torchvision requirement       (default: torch==2.14.1 torchvision==0.29.1)
#   D2_WHEEL_SPEC detectron2 redistribution from PyPI (default: sal-detectron2==0.7.2)
#   SYSTEM_SITE_PACKAGES=1  create the venv with --system-site-packages, so a detectron2 (or torch)
#                 you built from source outside the venv is seen and left alone
set -euo pipefail
export PYTHONWARNINGS=ignore

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_WHEEL_SPEC=${D2_WHEEL_SPEC:-"sal-detectron2==0.7.2"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

STEP="start"
trap 'echo "[setup] FAILED at step: $STEP (see the output above). Fix it and run make setup again." >&2' ERR
step() { STEP="$1"; echo "[setup] $1"; }

STAMP_INPUT="$(cat scripts/setup_env.sh requirements.txt setup.py) $PYTHON $TORCH_SPEC $D2_WHEEL_SPEC"
STAMP_HASH=$(printf '%s' "$STAMP_INPUT" | sha256sum | cut -d' ' -f1)
if [ -f "$VENV/.hpvit-setup" ] && [ "$(cat "$VENV/.hpvit-setup")" = "$STAMP_HASH" ] \
   && "$VENV/bin/python" -c "import torch, detectron2.modeling, hpvit_d2" 2>/dev/null; then
    echo "[setup] $VENV is up to date"
    exit 0
fi

step "create venv $VENV with $PYTHON"
if ! command -v "$PYTHON" >/dev/null; then
    echo "[setup] $PYTHON not found: install Python 3.11 or run 'make setup PYTHON=/path/to/python3.x'" >&2
    exit 1
fi
VENV_FLAGS=""
[ "${SYSTEM_SITE_PACKAGES:-0}" = "1" ] && VENV_FLAGS="--system-site-packages"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv $VENV_FLAGS "$VENV"
PY="$VENV/bin/python"
# pip quietly, without the "Location ... is ignored" lines of this machine's extra indexes.
pip_install() {
    "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
PIP=pip_install

step "install PyTorch ($TORCH_SPEC)"
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    $PIP $TORCH_SPEC
fi

step "install dependencies (requirements.txt)"
$PIP -r requirements.txt

step "install detectron2"
if "$PY" -c "from detectron2.modeling import ViT" 2>/dev/null; then
    echo "[setup]   an importable detectron2 with detectron2.modeling.ViT is present: left alone"
else
    # detectron2 is not on PyPI; sal-detectron2 is a wheel of upstream detectron2 (2024-04) tagged
    # cp310-none-any. pip refuses the tag on 3.11, PyPA's installer does not check it.
    WHEELDIR=$(mktemp -d)
    $PIP installer
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$WHEELDIR" "$D2_WHEEL_SPEC"
    "$PY" -m installer "$WHEELDIR"/*.whl
    rm -rf "$WHEELDIR"
    "$PY" -c "from detectron2.modeling import ViT"
fi

step "install hpvit_d2 (editable)"
$PIP --no-deps -e .
"$PY" -c "import hpvit_d2, detectron2.model_zoo, torch; print('[setup]   torch', torch.__version__)"

printf '%s' "$STAMP_HASH" > "$VENV/.hpvit-setup"
echo "[setup] done: $VENV"
