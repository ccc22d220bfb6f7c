#!/usr/bin/env bash
# GPU check (issue 12, item 7): paper-size CLIP and MAE-CLIP training steps
# (clip_vit_b16_gap, maeclip_vit_b16_gap: ViT-B/16 at 224², batch 256,
# mixed_bfloat16) on each Keras backend, plus open_clip's CLIP of the same
# size, on one GPU, in at most 8 minutes. The work is done by
# benchmarks/gpu_step.py (its docstring says how steps are driven and timed);
# this script only prints the GPU, installs the carried wheels and runs it.
#
# Made for the device machine (one H100 / H200; python3 = /opt/torch/.venv,
# with torch and jax for CUDA but no TensorFlow, Keras, keras-hub or
# open_clip, and no network): Keras 3.15.1, keras-hub 0.32.0, keras_maeclip (its own wheel), namex,
# optree (cp312), open_clip_torch 3.3.0, ftfy and wcwidth come as wheels in
# .gpu_wheels/ (ignored through .git/info/exclude; the device call carries
# it; docs/benchmarks.md, "GPU check (issue 12, item 7)", has the download
# command and the call). TensorFlow rows print "skipped" there.
#
# Usage (repository root or anywhere):
#   bash benchmarks/gpu_check.sh                      # the check, on a GPU
#   bash benchmarks/gpu_check.sh --models=clip        # extra flags go to gpu_step.py
# Environment (defaults in brackets):
#   PYTHON [python3]            the Python to run
#   GPU_CHECK_BATCH [256]       batch size
#   GPU_CHECK_WARMUP [3]        untimed warm-up steps (the first compiles)
#   GPU_CHECK_STEPS [10]        timed steps
#   GPU_CHECK_DTYPE [mixed_bfloat16]
#   GPU_CHECK_BUDGET_S [400]    seconds for all rows; GPU_CHECK_ROW_TIMEOUT_S [150] per row
#   GPU_CHECK_REQUIRE_GPU [1]   0: allow rows on the CPU (smoke tests)
#   GPU_CHECK_INSTALL [auto]    1 / 0 / auto: install .gpu_wheels/ into GPU_CHECK_SITE
#                               [/tmp/gpu_check_site] (auto: when `import keras` fails)
#   OUT                         if set, gpu_check.log, gpu_step.txt and gpu_step.jsonl go there
# CPU smoke test (tiny presets, float32, TensorFlow blocked):
#   PYTHON=.venv/bin/python GPU_CHECK_REQUIRE_GPU=0 GPU_CHECK_BATCH=2 GPU_CHECK_WARMUP=1 \
#   GPU_CHECK_STEPS=1 GPU_CHECK_DTYPE=float32 bash benchmarks/gpu_check.sh \
#     --clip_preset=clip_tiny_gap --maeclip_preset=maeclip_tiny_gap --block_tensorflow
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && LOG="$OUT/gpu_check.log"; fi

{
  echo "== gpu_check.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    nvidia-smi | sed -n '1,4p'
  else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
  fi
  echo "python: $($PY -c 'import sys; print(sys.executable, sys.version.split()[0])')"

  install=${GPU_CHECK_INSTALL:-auto}
  if [ "$install" = auto ]; then
    if $PY -c 'import keras' 2>/dev/null; then install=0; else install=1; fi
  fi
  if [ "$install" = 1 ]; then
    SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
    if ls .gpu_wheels/*.whl >/dev/null 2>&1; then
      echo "installing $(ls .gpu_wheels/*.whl | wc -l) carried wheels into $SITE (no deps, no index)"
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .gpu_wheels/*.whl || echo "WARNING: wheel install failed"
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "WARNING: no .gpu_wheels/*.whl here: Keras rows and open_clip will fail to import"
    fi
  fi
  $PY -c 'import importlib.metadata as m
for d in ("torch", "jax", "jax-cuda13-plugin", "numpy", "keras", "keras-hub", "open_clip_torch", "tensorflow"):
    try: print(f"  {d} {m.version(d)}")
    except m.PackageNotFoundError: print(f"  {d}: not installed")'

  require=()
  [ "${GPU_CHECK_REQUIRE_GPU:-1}" = 1 ] && require=(--require_gpu)
  # Hard stop a little after the row budget (+ imports and the table).
  timeout -k 10 $(( ${GPU_CHECK_BUDGET_S:-400} + 40 )) \
    "$PY" benchmarks/gpu_step.py "${require[@]}" \
      --batch_size="${GPU_CHECK_BATCH:-256}" --warmup="${GPU_CHECK_WARMUP:-3}" \
      --steps="${GPU_CHECK_STEPS:-10}" --dtype="${GPU_CHECK_DTYPE:-mixed_bfloat16}" \
      --budget_s="${GPU_CHECK_BUDGET_S:-400}" --row_timeout="${GPU_CHECK_ROW_TIMEOUT_S:-150}" \
      "$@"
  rc=$?
  echo "== gpu_step.py exited with $rc"
  exit $rc
} 2>&1 | tee "$LOG"
