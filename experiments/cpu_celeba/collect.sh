#!/usr/bin/env bash
# Copy the small artifacts of every finished row (metrics, ROC, config, last alignment grid, training
# curve) from logs/cpu_celeba/<study>/<row> into experiments/cpu_celeba/runs/<study>/<row>; the
# checkpoints stay in logs/. Then rebuild table.md / table.csv / roc.png with stn-face-report.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
for run in logs/cpu_celeba/*/*/; do
  run=${run%/}; [ -f "$run/metrics.json" ] || continue
  out=experiments/cpu_celeba/runs/${run#logs/cpu_celeba/}
  mkdir -p "$out/.hydra" "$out/alignment"
  cp -f "$run"/metrics.json "$run"/roc_lfw.npz "$run"/roc_lfw.png "$out/"
  cp -f "$run"/.hydra/config.yaml "$run"/.hydra/overrides.yaml "$out/.hydra/"
  cp -f "$run"/csv/version_0/metrics.csv "$out/train_metrics.csv"
  cp -f "$run"/undo_jitter.json "$run"/undo_jitter.png "$out/" 2>/dev/null || true
  last=$(ls "$run"/alignment/step*.png 2>/dev/null | tail -1) && cp -f "$last" "$out/alignment/"
done
# 256-colour copies of the grids keep the repository small
"$PY" - <<'PY'
from pathlib import Path
from PIL import Image
for p in Path("experiments/cpu_celeba/runs").rglob("alignment/*.png"):
    Image.open(p).convert("RGB").quantize(256).save(p, optimize=True)
PY
"$PY" -m stn_face.evaluation.report logs/cpu_celeba --out experiments/cpu_celeba
