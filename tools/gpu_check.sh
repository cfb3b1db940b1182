#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU (about 5-7 minutes, at most ~9): install drivetl, build
# the CPU and CUDA ops, run every `gpu`-marked test (the Waymo-scale bit-exactness ones among them),
# run the CUDA voxelization benchmark, measure pretraining throughput of the Waymo-scale LiDAR-only and
# LiDAR + camera models (bf16 mixed precision), run a 2-step `drivetl pretrain` and a 2-step
# `drivetl finetune` on the GPU, and last the CPU voxelization benchmark for reference. Results go
# under ${OUT:-gpu_results}/: gpu.txt, packages.txt, build_ops.txt, pytest_gpu.txt/.xml,
# bench_voxelize_cuda.txt/.json, bench_train_lidar_cuda.txt/.json, bench_train_cuda.txt/.json,
# pretrain_gpu_smoke.txt, finetune_gpu_smoke.txt, bench_voxelize_cpu.txt/.json, summary.txt,
# gpu_check.log.
#
# Every step runs even when an earlier one failed (unless torch sees no GPU at all); each failure is
# recorded and listed in summary.txt. Exit status: 0 when every step passed.
#
# Python packages `drivetl pretrain` needs beyond torch and Lightning (jsonargparse, docstring-parser,
# typeshed-client, crc32c; about 1 MB): where the GPU machine cannot download them, put their wheels
# in ${WHEELS:-.whl}/ beforehand and they are installed from there (no index), e.g. for Python 3.12:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     jsonargparse docstring-parser typeshed-client crc32c
# (on a machine that runs a git checkout, keep .whl/ out of git: `echo /.whl/ >> .git/info/exclude`).
# The smoke run's frames come from ${SMOKE_DATA} when set (any folder `--data.root` takes), else from `drivetl simulate` when open3d and
# the Waymo protobuf modules are installed, else from tools/bench_train.py --write-team (synthetic
# Waymo-scale frames in the team format, no extra packages).
#
# Time budget: ${GPU_CHECK_BUDGET_S:-540} s from the start; a step that would run past it gets a
# shorter timeout, or is skipped (and recorded) when under 30 s are left.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-gpu_results}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
T0=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET_S:-540}"
failed=()
step() { echo; echo "== $* ($(date -u +%H:%M:%S), $(( $(date +%s) - T0 )) s in)"; }
fail() { echo "FAILED: $*"; failed+=("$*"); }
# left: seconds of the budget still left; cap N: min(N, left - 10), empty when under 30 s are left
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
cap() { local l; l=$(( $(left) - 10 )); if [ "$l" -lt 30 ]; then echo ""; elif [ "$1" -lt "$l" ]; then echo "$1"; else echo "$l"; fi; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT_DIR/gpu.txt" \
    || echo "nvidia-smi failed" | tee "$OUT_DIR/gpu.txt"
echo "cpus $(nproc); /dev/shm: $(df -h /dev/shm 2>/dev/null | tail -1)"

step "install drivetl"
WHEELS="${WHEELS:-.whl}"
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "installing wheels from $WHEELS/ into ${TMPDIR:-/tmp}/drivetl_site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "${TMPDIR:-/tmp}/drivetl_site" \
        "$WHEELS"/*.whl; then
        export PYTHONPATH="${TMPDIR:-/tmp}/drivetl_site${PYTHONPATH:+:$PYTHONPATH}"
    else fail "install wheels from $WHEELS"; fi
fi
if "$PY" -c "import torch" >/dev/null 2>&1; then
    if ! "$PY" -m pip install -q -e . --no-deps; then
        echo "pip install -e . failed; importing drivetl from $PWD instead"
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
else
    "$PY" -m pip install -q -e ".[dev]" || { echo "pip install failed"; exit 1; }
fi
"$PY" -m pip install -q pytest >/dev/null 2>&1 || true
if ! "$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})"
major, minor = torch.cuda.get_device_capability()
print(f"torch {torch.__version__} cuda {torch.version.cuda} device {torch.cuda.get_device_name()} sm_{major}{minor}")
PYEOF
then
    echo "no usable CUDA device for torch; stopping"
    exit 1
fi
"$PY" - <<'PYEOF' 2>&1 | tee "$OUT_DIR/packages.txt"
import importlib.util
need = {
    "pretrain (drivetl pretrain)": ["pytorch_lightning", "jsonargparse", "docstring_parser", "typeshed_client", "crc32c"],
    "simulate (smoke data)": ["open3d", "waymo_open_dataset"],
}
for what, mods in need.items():
    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    print(f"{what}: " + (f"MISSING {' '.join(missing)}" if missing else "all present"))
PYEOF
# Build for this card only (faster than torch's default list of architectures).
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
export DRIVETL_OPS_BUILD_DIR="${DRIVETL_OPS_BUILD_DIR:-$PWD/.drivetl-ops-build}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

step "drivetl build-ops --backend all (arch $TORCH_CUDA_ARCH_LIST, into $DRIVETL_OPS_BUILD_DIR)"
start=$(date +%s)
t=$(cap 300)
timeout "${t:-30}" "$PY" -m drivetl build-ops --backend all 2>&1 | tee "$OUT_DIR/build_ops.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "build-ops"
echo "build-ops took $(( $(date +%s) - start )) s" | tee -a "$OUT_DIR/build_ops.txt"

step "pytest -m gpu"
if t=$(cap 200) && [ -n "$t" ]; then
    timeout "$t" "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT_DIR/pytest_gpu.xml" 2>&1 \
        | tee "$OUT_DIR/pytest_gpu.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail "GPU tests"
else echo "skipped" > "$OUT_DIR/pytest_gpu.txt"; fail "GPU tests: skipped, out of time"; fi

step "benchmark: voxelization, CUDA"
if t=$(cap 120) && [ -n "$t" ]; then
    timeout "$t" "$PY" tools/bench_voxelize.py --device cuda --repeats 21 --profile --json "$OUT_DIR/bench_voxelize_cuda.json" \
        2>&1 | tee "$OUT_DIR/bench_voxelize_cuda.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail "voxelization benchmark (CUDA)"
else fail "voxelization benchmark (CUDA): skipped, out of time"; fi

# Waymo-scale LiDAR-only pretraining (configs/pretrain/waymo_lidar.yaml), bf16 mixed precision, same
# synthetic frames without cameras. Target on one H100/H200: >= 60 training frames/s.
step "pretraining throughput: waymo_lidar, cuda, bf16-mixed"
WORKERS="${BENCH_WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}"
: > "$OUT_DIR/bench_train_lidar_cuda.txt"
if t=$(cap 120) && [ -n "$t" ]; then
    timeout "$t" "$PY" tools/bench_train.py --config configs/pretrain/waymo_lidar.yaml --device cuda \
        --precision bf16-mixed --batch-size 16 --steps 20 --warmup 3 --workers "$WORKERS" \
        --json "$OUT_DIR/bench_train_lidar_cuda.json" 2>&1 | tee -a "$OUT_DIR/bench_train_lidar_cuda.txt"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || fail "LiDAR-only pretraining throughput benchmark (exit $rc)"
else fail "LiDAR-only pretraining throughput benchmark: skipped, out of time"; fi

# Waymo-scale LiDAR + camera pretraining (configs/pretrain/waymo_fusion.yaml), bf16 mixed precision,
# synthetic Waymo-scale frames (150-180k points over +-75 m, five 256 x 384 cameras). Target on one
# H100: >= 30 training frames/s. Batch 8 fits an 80 GB card; after a failure that is not a timeout
# (e.g. out of memory) it is retried once at batch 4.
step "pretraining throughput: waymo_fusion, cuda, bf16-mixed"
bench_train() {
    timeout "$1" "$PY" tools/bench_train.py --config configs/pretrain/waymo_fusion.yaml --device cuda \
        --precision bf16-mixed --batch-size "$2" --steps 20 --warmup 3 --workers "$WORKERS" \
        --json "$OUT_DIR/bench_train_cuda.json" 2>&1 | tee -a "$OUT_DIR/bench_train_cuda.txt"
    return "${PIPESTATUS[0]}"
}
: > "$OUT_DIR/bench_train_cuda.txt"
if t=$(cap 180) && [ -n "$t" ]; then
    bench_train "$t" 8; rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && t=$(cap 150) && [ -n "$t" ]; then
        echo "batch 8 failed (exit $rc); retrying at batch 4" | tee -a "$OUT_DIR/bench_train_cuda.txt"
        bench_train "$t" 4; rc=$?
    fi
    [ "$rc" -eq 0 ] || fail "pretraining throughput benchmark (exit $rc)"
else fail "pretraining throughput benchmark: skipped, out of time"; fi

# 2 training steps (+ 1 validation batch and the checkpoints) of the Waymo-scale config through the
# real CLI on the GPU, bf16 mixed precision, on 5 frames (4 train, 1 validation; batch 2).
step "pretraining smoke run on the GPU: drivetl pretrain, waymo_fusion, 2 steps, bf16-mixed"
SMOKE_LOG="$OUT_DIR/pretrain_gpu_smoke.txt"
: > "$SMOKE_LOG"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/drivetl_gpu_check.XXXXXX")"
smoke_data="${SMOKE_DATA:-}"
if [ -z "$smoke_data" ] && "$PY" -c "import open3d, waymo_open_dataset.dataset_pb2" >/dev/null 2>&1; then
    # the Waymo-like rig reduced to its TOP LiDAR (all 64 beams), cameras at a fifth of their size
    "$PY" - "$WORK/rig.yaml" <<'PYEOF' 2>&1 | tee -a "$SMOKE_LOG"
import sys, yaml
rig = yaml.safe_load(open("configs/rigs/waymo_like.yaml"))
rig["lidars"] = [lidar for lidar in rig["lidars"] if lidar["name"] == "TOP"]
open(sys.argv[1], "w").write(yaml.safe_dump(rig))
PYEOF
    if t=$(cap 120) && [ -n "$t" ] && timeout "$t" "$PY" -m drivetl simulate --rig "$WORK/rig.yaml" --frames 5 \
        --out "$WORK/sim" --format waymo --camera-scale 0.2 --frames-per-segment 4 --shard-frames 4 \
        2>&1 | tee -a "$SMOKE_LOG"; then
        smoke_data="$WORK/sim"
    else
        echo "drivetl simulate failed; using synthetic frames instead" | tee -a "$SMOKE_LOG"
    fi
fi
if [ -z "$smoke_data" ] && t=$(cap 120) && [ -n "$t" ]; then
    timeout "$t" "$PY" tools/bench_train.py --config configs/pretrain/waymo_fusion.yaml \
        --write-team "$WORK/team" --frames 5 2>&1 | tee -a "$SMOKE_LOG"
    [ "${PIPESTATUS[0]}" -eq 0 ] && smoke_data="$WORK/team"
fi
if [ -z "$smoke_data" ]; then
    fail "pretraining smoke run: no frames to train on"
elif t=$(cap 180) && [ -n "$t" ]; then
    echo "frames: $smoke_data" | tee -a "$SMOKE_LOG"
    timeout "$t" "$PY" -m drivetl pretrain --config configs/pretrain/waymo_fusion.yaml \
        --data.root "$smoke_data" --trainer.accelerator gpu --trainer.devices 1 \
        --trainer.precision bf16-mixed --trainer.max_steps 2 --trainer.val_check_interval 2 \
        --trainer.limit_val_batches 1 --trainer.default_root_dir "$WORK/run" \
        --trainer.enable_progress_bar false --data.init_args.batch_size 2 \
        --data.init_args.num_workers 2 2>&1 | tee -a "$SMOKE_LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        "$PY" - "$WORK/run/checkpoints/last.ckpt" <<'PYEOF' 2>&1 | tee -a "$SMOKE_LOG"
import sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
meta = ckpt["drivetl"]
assert ckpt["global_step"] == 2, ckpt["global_step"]
print(f"checkpoint ok: global_step {ckpt['global_step']}, arch {meta['arch']}, cameras {meta['camera_names']}, "
      f"image size {meta['image_size']}, columns {meta['point_columns']}")
PYEOF
        [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    fi
    [ "$rc" -eq 0 ] || fail "pretraining smoke run on the GPU (exit $rc)"
else fail "pretraining smoke run: skipped, out of time"; fi

# 2 fine-tuning steps (LoRA, configs/finetune/lora.yaml) from the smoke run's checkpoint, on the same
# frames, on the GPU with bf16 mixed precision: adapters file, summary and final checkpoint written.
step "fine-tuning smoke run on the GPU: drivetl finetune, lora, 2 steps, bf16-mixed"
FT_LOG="$OUT_DIR/finetune_gpu_smoke.txt"
: > "$FT_LOG"
if [ ! -f "$WORK/run/checkpoints/last.ckpt" ]; then
    fail "fine-tuning smoke run: no pretrained checkpoint from the smoke run"
elif t=$(cap 150) && [ -n "$t" ]; then
    timeout "$t" "$PY" -m drivetl finetune --config configs/finetune/lora.yaml \
        --model.pretrained "$WORK/run/checkpoints/last.ckpt" --data.root "$smoke_data" \
        --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed \
        --trainer.max_steps 2 --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false \
        --trainer.default_root_dir "$WORK/ft" --data.batch_size 2 --data.num_workers 2 \
        --model.norm_batches 2 2>&1 | tee -a "$FT_LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        "$PY" - "$WORK/ft" <<'PYEOF' 2>&1 | tee -a "$FT_LOG"
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
summary = json.loads((run / "finetune_summary.json").read_text())
assert summary["steps"] == 2, summary
assert (run / "adapters.safetensors").is_file() and (run / "finetuned.ckpt").is_file()
print(f"finetune ok: {summary['steps']} steps, method {summary['method']}, "
      f"trainable share {summary['trainable_share']:.4f}")
PYEOF
        [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    fi
    [ "$rc" -eq 0 ] || fail "fine-tuning smoke run on the GPU (exit $rc)"
else fail "fine-tuning smoke run: skipped, out of time"; fi
rm -rf "$WORK"

step "benchmark: voxelization, CPU (same machine, for reference)"
if t=$(cap 90) && [ -n "$t" ]; then
    timeout "$t" "$PY" tools/bench_voxelize.py --device cpu --repeats 5 --json "$OUT_DIR/bench_voxelize_cpu.json" \
        2>&1 | tee "$OUT_DIR/bench_voxelize_cpu.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail "voxelization benchmark (CPU)"
else fail "voxelization benchmark (CPU): skipped, out of time"; fi


{
    echo "gpu: $(tail -n +2 "$OUT_DIR/gpu.txt" | head -1)"
    echo "packages: $(tr '\n' ';' < "$OUT_DIR/packages.txt")"
    echo "build: $(tail -1 "$OUT_DIR/build_ops.txt")"
    echo "gpu tests: $(tail -1 "$OUT_DIR/pytest_gpu.txt")"
    echo "voxelization (CUDA): $(grep -iE '^(==|torch|drivetl|cuda)' "$OUT_DIR/bench_voxelize_cuda.txt" 2>/dev/null | tr -s ' ' | paste -sd ';' -)"
    echo "pretraining throughput, LiDAR only: $(grep -E '^(baseline|ours|ratio|target)' "$OUT_DIR/bench_train_lidar_cuda.txt" | tr -s ' ' | paste -sd ';' -)"
    echo "pretraining throughput, LiDAR + cameras: $(grep -E '^(baseline|ours|ratio|target)' "$OUT_DIR/bench_train_cuda.txt" | tr -s ' ' | paste -sd ';' -)"
    echo "pretraining smoke: $(grep -E '^checkpoint ok' "$SMOKE_LOG" || echo 'no checkpoint (see pretrain_gpu_smoke.txt)')"
    echo "fine-tuning smoke: $(grep -E '^finetune ok' "$FT_LOG" || echo 'no adapters (see finetune_gpu_smoke.txt)')"
    echo "took: $(( $(date +%s) - T0 )) s"
    if [ "${#failed[@]}" -eq 0 ]; then
        echo "status: 0 (every step passed)"
    else
        echo "status: 1; failed: $(printf '%s; ' "${failed[@]}")"
    fi
} | tee "$OUT_DIR/summary.txt"
[ "${#failed[@]}" -eq 0 ]
