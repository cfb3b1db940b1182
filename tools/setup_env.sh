#!/usr/bin/env bash
# Installs what drivetl needs on a Debian/Ubuntu machine, idempotently:
#   1. the system libraries open3d loads (apt, when missing and running as root);
#   2. torch, when it is not installed yet;
#   3. the project itself (editable) with its dev extras;
#   4. Waymo's protobuf schema wheel with --no-deps (its pins would pull TensorFlow).
set -euo pipefail
PYTHON="${PYTHON:-python3}"
STAMP_DIR="${DRIVETL_STAMP_DIR:-.drivetl-setup}"

# 1. System libraries used by open3d's wheel.
APT_PKGS="libgl1 libgomp1 libusb-1.0-0 libegl1 libx11-6"
if command -v dpkg-query >/dev/null 2>&1; then
    missing=""
    for p in $APT_PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = "0" ]; then
            echo "[setup] installing system libraries:$missing"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq --no-install-recommends $missing >/dev/null
        else
            echo "[setup] open3d needs these system libraries; run:" >&2
            echo "    sudo apt-get install -y$missing" >&2
            exit 1
        fi
    fi
fi

# 2. torch (a CPU or CUDA build; whatever pip resolves for this machine).
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch"
    "$PYTHON" -m pip install -q "torch==2.13.0" || "$PYTHON" -m pip install -q torch
fi

# 3. The project, re-installed only when pyproject.toml changed.
mkdir -p "$STAMP_DIR"
sum="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP_DIR/project" 2>/dev/null || true)" != "$sum" ] \
    || ! "$PYTHON" -c "import drivetl, pytest, hypothesis" >/dev/null 2>&1; then
    echo "[setup] installing drivetl and its dependencies"
    "$PYTHON" -m pip install -q -e ".[dev]"
    echo "$sum" > "$STAMP_DIR/project"
fi

# 4. Waymo's protobuf modules, without the wheel's TensorFlow pins.
if ! "$PYTHON" -c "from waymo_open_dataset import dataset_pb2" >/dev/null 2>&1; then
    echo "[setup] installing waymo-open-dataset-tf-2-12-0 (protobuf modules only, --no-deps)"
    "$PYTHON" -m pip install -q --no-deps "waymo-open-dataset-tf-2-12-0==1.6.7"
fi
"$PYTHON" -c "import open3d" >/dev/null 2>&1 || { echo "[setup] open3d does not import; see the error above" >&2; "$PYTHON" -c "import open3d"; }
echo "[setup] ok"
