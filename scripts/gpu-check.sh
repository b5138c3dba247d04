#!/usr/bin/env bash
# One command for a lent GPU: install what the CUDA path needs, run the -m gpu tests, bench random
# models shaped like CLIP ViT-B/32, ViT-L/14 and a small LLaVA, and print one table.
# Target: under 10 minutes on one GPU. On a machine without CUDA it still runs end to end: it says
# which parts it skipped, runs the CPU tests of the same code and a short ViT-B/32 bench.
#
#   scripts/gpu-check.sh                 # from the repository root
#   GPU_CHECK_OUT=DIR scripts/gpu-check.sh   # keep the bench JSON (default: a temp dir)
#   GPU_CHECK_COMPILE=1 ...              # also bench ViT-B/32 with --compile (slow first batch)
set -uo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t vlmaudit-gpu-check-XXXX)}
mkdir -p "$OUT"
SKIPPED=()
FAILED=()
started=$(date +%s)

say() { printf '\n== %s\n' "$*"; }

say "environment"
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
$PY -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

say "install what the CUDA path needs (torchvision for nvJPEG decode; the test extra)"
$PY -c "import pytest, duckdb" 2>/dev/null || $PY -m pip install -q -e '.[test]' \
  || echo "warning: could not install the test extra (offline?); using what is installed"
if $PY -c "import torchvision.io" 2>/dev/null; then
  echo "torchvision: $($PY -c 'import torchvision; print(torchvision.__version__)')"
elif [ "$CUDA" = 1 ]; then
  # torchvision 0.(N+15) pairs with torch 2.N; --no-deps keeps the installed torch
  TV=$($PY -c "import torch; major, minor = torch.__version__.split('.')[:2]; print(f'0.{int(minor) + 15}.*')")
  $PY -m pip install -q --no-deps "torchvision==$TV" \
    || echo "warning: could not install torchvision==$TV (offline?): GPU JPEG decode falls back to the CPU"
else
  echo "skipped: torchvision (its PyPI wheels are CUDA builds; without CUDA --decode gpu is not available)"
  SKIPPED+=("torchvision install (no CUDA)")
fi

say "tests"
if [ "$CUDA" = 1 ]; then
  $PY -m pytest -q -m gpu tests/backends/test_gpu.py || FAILED+=("-m gpu tests")
else
  echo "SKIPPED: the -m gpu tests (tests/backends/test_gpu.py): no CUDA GPU on this machine"
  SKIPPED+=("-m gpu tests (no CUDA)")
fi
if $PY -c "import polars" 2>/dev/null; then
  $PY -m pytest -q tests/scan/test_gpu_decode.py tests/commands/test_perf.py || FAILED+=("CPU tests of the GPU path")
else
  echo "SKIPPED: the CPU tests of the GPU path (they read reports with polars, not installed here; CI runs them)"
  SKIPPED+=("CPU tests of the GPU path (no polars)")
fi

bench() {  # name, then vlmaudit bench arguments
  local name=$1; shift
  echo "bench $name: $*"
  if $PY -m vlmaudit bench "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.log"; then
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"  {r['end_to_end_samples_per_s']:.1f} samples/s end to end, ratio {r['ratio']:.2f}\")" "$OUT/$name.json"
  else
    echo "  FAILED (see $OUT/$name.log)"; tail -3 "$OUT/$name.log"; FAILED+=("bench $name"); rm -f "$OUT/$name.json"
  fi
}

say "benchmarks (random weights of real size; only speed is meaningful)"
if [ "$CUDA" = 1 ]; then
  W=$(( $(nproc) > 9 ? 8 : $(nproc) - 1 ))
  bench vit-b-32 --size vit-b-32 --shards 4 --per-shard 1024 --batch-size 256 --workers "$W"
  bench vit-b-32-cpu-decode --size vit-b-32 --shards 4 --per-shard 1024 --batch-size 256 --workers "$W" --decode cpu
  bench vit-l-14 --size vit-l-14 --shards 4 --per-shard 1024 --batch-size 256 --workers "$W"
  bench vit-l-14-cpu-decode --size vit-l-14 --shards 4 --per-shard 1024 --batch-size 256 --workers "$W" --decode cpu
  bench llava-0.5b --backend vlm --size llava-0.5b --shards 2 --per-shard 64 --batch-size 16 --workers "$W"
  if [ "${GPU_CHECK_COMPILE:-0}" = 1 ]; then
    bench vit-b-32-compile --size vit-b-32 --shards 4 --per-shard 1024 --batch-size 256 --workers "$W" --compile
  fi
else
  bench vit-b-32 --size vit-b-32 --shards 2 --per-shard 16 --batch-size 16 --workers 1 --device cpu
  echo "SKIPPED: the ViT-L/14 and LLaVA-0.5B benches and --compile (too slow without a GPU; MFU needs a GPU peak)"
  SKIPPED+=("ViT-L/14, LLaVA-0.5B and --compile benches (no CUDA)")
fi

say "results"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path

rows = [json.loads(p.read_text()) | {"name": p.stem} for p in sorted(Path(sys.argv[1]).glob("*.json"))]
pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
print("| bench | device | precision | decode | samples/s | bare samples/s | GFLOP/sample | TFLOP/s | MFU | ratio to bare |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['name']} | {r['device_name']} | {r['precision']} | {r['decode']} | {r['end_to_end_samples_per_s']:.1f} "
          f"| {r['bare_forward_samples_per_s']:.1f} | {r['gflops_per_sample']:.2f} | {r['end_to_end_tflops']:.2f} "
          f"| {pct(r['end_to_end_mfu'])} | {r['ratio']:.2f} |")
if rows:
    print(f"\npeak: {rows[0]['peak_tflops']} TFLOP/s ({rows[0]['peak_source']}); FLOPs: a multiply-add counts 2")
PYEOF

say "summary ($(( $(date +%s) - started )) s; JSON in $OUT)"
for s in "${SKIPPED[@]}"; do echo "skipped: $s"; done
for f in "${FAILED[@]}"; do echo "FAILED: $f"; done
[ ${#FAILED[@]} -eq 0 ]
