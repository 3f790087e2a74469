#!/usr/bin/env bash
# Copy the small artifacts of every finished run (metrics, ROC with its scored pairs, config, training
# curve; the alignment grid and the jitter analysis of seed 42) from logs/cpu_celeba/<study>/<row>/seed<k>
# into experiments/cpu_celeba/runs/<study>/<row>/seed<k>; the checkpoints stay in logs/. Then rebuild
# table.md/.csv (every run), seeds.md/.csv (mean ± std across seeds), paired.md/.csv (each learned row
# against its identity row; the landmark-aligned crops against the plain ones; projective against
# similarity and tps against projective; the 3x-budget rows against their 300-step rows) and roc.png
# (one curve per row) with stn-face-report; last, README.md from the words in readme/ and those tables
# (assemble_readme.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
for run in logs/cpu_celeba/*/*/seed*/; do
  run=${run%/}; [ -f "$run/metrics.json" ] || continue
  out=experiments/cpu_celeba/runs/${run#logs/cpu_celeba/}
  mkdir -p "$out/.hydra"
  cp -f "$run"/metrics.json "$run"/roc_lfw.npz "$out/"
  cp -f "$run"/.hydra/config.yaml "$run"/.hydra/overrides.yaml "$run"/.hydra/hydra.yaml "$out/.hydra/"
  cp -f "$run"/csv/version_0/metrics.csv "$out/train_metrics.csv"
  if [ "${run##*/}" = seed42 ]; then
    cp -f "$run"/undo_jitter.json "$run"/undo_jitter.png "$out/" 2>/dev/null || true
    last=$(ls "$run"/alignment/step*.png 2>/dev/null | tail -1) && mkdir -p "$out/alignment" && cp -f "$last" "$out/alignment/"
  fi
done
cp -f logs/cpu_celeba/times.tsv experiments/cpu_celeba/times.tsv
# 256-colour copies of the grids keep the repository small
"$PY" - <<'PY'
from pathlib import Path
from PIL import Image
for p in Path("experiments/cpu_celeba/runs").rglob("alignment/*.png"):
    Image.open(p).convert("RGB").quantize(256).save(p, optimize=True)
PY
"$PY" -m stn_face.cli.report experiments/cpu_celeba/runs --out experiments/cpu_celeba \
    --published "${STN_FACE_DATA:-../shared/data}/lfw/published-roc" \
    --compare clean/landmarks=clean/identity \
    --compare clean/projective=clean/similarity --compare clean/tps=clean/projective \
    --compare misaligned/projective=misaligned/similarity --compare misaligned/tps=misaligned/projective \
    --compare misaligned/identity_3x=misaligned/identity --compare misaligned/projective_3x=misaligned/projective
"$PY" experiments/cpu_celeba/assemble_readme.py
