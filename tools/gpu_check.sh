#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU (about 3-5 minutes): install drivetl, build the CPU
# and CUDA ops, run every `gpu`-marked test, run the voxelization benchmarks (CUDA, then CPU), and
# write the results under ${OUT:-gpu_results}/ (gpu.txt, build_ops.txt, pytest_gpu.txt/.xml,
# bench_voxelize_cuda.txt/.json, bench_voxelize_cpu.txt/.json, summary.txt, gpu_check.log).
# Exit status: 0 when the build and the GPU tests pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-gpu_results}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
status=0
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT_DIR/gpu.txt" \
    || echo "nvidia-smi failed" | tee "$OUT_DIR/gpu.txt"

step "install drivetl"
if "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install -q -e . --no-deps || { echo "pip install failed"; exit 1; }
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
# Build for this card only (faster than torch's default list of architectures).
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
export DRIVETL_OPS_BUILD_DIR="${DRIVETL_OPS_BUILD_DIR:-$PWD/.drivetl-ops-build}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

step "drivetl build-ops --backend all (arch $TORCH_CUDA_ARCH_LIST, into $DRIVETL_OPS_BUILD_DIR)"
start=$(date +%s)
if ! "$PY" -m drivetl build-ops --backend all 2>&1 | tee "$OUT_DIR/build_ops.txt"; then
    echo "build-ops FAILED"; status=1
fi
echo "build-ops took $(( $(date +%s) - start )) s" | tee -a "$OUT_DIR/build_ops.txt"

step "pytest -m gpu"
"$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT_DIR/pytest_gpu.xml" 2>&1 | tee "$OUT_DIR/pytest_gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "GPU tests FAILED"; status=1; }

step "benchmark: CUDA"
timeout 120 "$PY" tools/bench_voxelize.py --device cuda --repeats 21 --json "$OUT_DIR/bench_voxelize_cuda.json" \
    2>&1 | tee "$OUT_DIR/bench_voxelize_cuda.txt"

step "benchmark: CPU (same machine, for reference)"
timeout 150 "$PY" tools/bench_voxelize.py --device cpu --repeats 5 --json "$OUT_DIR/bench_voxelize_cpu.json" \
    2>&1 | tee "$OUT_DIR/bench_voxelize_cpu.txt"

{
    echo "gpu: $(tail -n +2 "$OUT_DIR/gpu.txt" | head -1)"
    echo "build: $(tail -1 "$OUT_DIR/build_ops.txt")"
    echo "gpu tests: $(tail -1 "$OUT_DIR/pytest_gpu.txt")"
    echo "status: $status"
} | tee "$OUT_DIR/summary.txt"
exit $status
