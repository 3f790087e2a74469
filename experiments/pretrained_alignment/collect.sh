#!/usr/bin/env bash
# Copy the small artifacts of every finished run of run.sh (metrics, ROC with its scored pairs, config,
# training curve; the last alignment grid of the first seed, 256 colours) from logs/pretrained_alignment/
# into experiments/pretrained_alignment/runs/ (checkpoints stay in logs/), then write table.md/.csv (every
# run), seeds.md/.csv (mean ± std across seeds), paired.md/.csv and roc.png (one curve per row) with
# stn-face-report. Paired comparisons: each learned row against the start frame alone (clean/identity:
# what learning adds), the start frame against plain crops, the landmark reference against both, the
# projective rows against the landmark reference, misaligned/projective against misaligned/identity, the
# fine-tuned backbone against the frozen one, and the families against each other.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
LOGS=logs/pretrained_alignment
OUT=experiments/pretrained_alignment
while IFS= read -r metrics; do
  run=$(dirname "$metrics"); dest=$OUT/runs/${run#"$LOGS"/}
  mkdir -p "$dest/.hydra"
  cp -f "$run"/metrics.json "$run"/roc_lfw.npz "$dest/"
  cp -f "$run"/.hydra/config.yaml "$run"/.hydra/overrides.yaml "$run"/.hydra/hydra.yaml "$dest/.hydra/"
  [ -f "$run/csv/version_0/metrics.csv" ] && cp -f "$run/csv/version_0/metrics.csv" "$dest/train_metrics.csv"
  if [ "${run##*/}" = seed1 ] && last=$(ls "$run"/alignment/step*.png 2>/dev/null | tail -1); then
    mkdir -p "$dest/alignment" && cp -f "$last" "$dest/alignment/"
  fi
done < <(find "$LOGS" -name metrics.json -not -path "*/checkpoints/*" | sort)
cp -f "$LOGS/times.tsv" "$OUT/times.tsv"
"$PY" - <<'PY'
from pathlib import Path
from PIL import Image
for p in Path("experiments/pretrained_alignment/runs").rglob("alignment/*.png"):
    Image.open(p).convert("RGB").quantize(256).save(p, optimize=True)
PY
rows=$(find "$OUT/runs" -name metrics.json | sed "s#^$OUT/runs/##; s#/metrics.json##; s#/seed[0-9]*##" | sort -u)
pairs=()
want() { grep -qx "$1" <<<"$rows" && grep -qx "$2" <<<"$rows" && pairs+=(--compare "$1=$2") || true; }
for t in similarity affine projective tps; do want "clean/$t" clean/identity; done
want clean/identity clean/plain
want reference/dlib_5point clean/plain
want reference/dlib_5point clean/identity
for t in similarity affine projective tps; do want "clean/$t" reference/dlib_5point; done
want finetune/projective reference/dlib_5point
want misaligned/identity clean/identity
want misaligned/projective misaligned/identity
want finetune/projective clean/projective
want clean/affine clean/similarity
want clean/projective clean/affine
want clean/projective clean/similarity
want clean/tps clean/projective
"$PY" -m stn_face.cli.report "$OUT/runs" --out "$OUT" \
    --published "${STN_FACE_DATA:-../shared/data}/lfw/published-roc" ${pairs[@]+"${pairs[@]}"}
"$PY" experiments/pretrained_alignment/assemble_readme.py
