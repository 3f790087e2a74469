#!/usr/bin/env bash
# Run rows of the CPU study one after another (never two at once on a 2-core machine) and append each
# row's wall time to logs/cpu_celeba/times.tsv. Rows: clean/<t> or misaligned/<t> for a transform t
# (identity, similarity, affine, projective), and clean/landmarks.
#   bash experiments/cpu_celeba/run.sh clean/identity clean/projective misaligned/projective
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${STN_FACE_DATA:?set STN_FACE_DATA to the data folder (see README: Data)}"
export NO_ALBUMENTATIONS_UPDATE=1
PY=${PYTHON:-.venv/bin/python}
mkdir -p logs/cpu_celeba
for row in "$@"; do
  study=${row%%/*}; variant=${row#*/}
  case "$study/$variant" in
    clean/landmarks) args=(experiment=cpu_celeba_landmarks) ;;
    clean/*) args=(experiment=cpu_celeba "transform=$variant") ;;
    misaligned/*) args=(experiment=cpu_celeba_misaligned "transform=$variant") ;;
    *) echo "unknown row '$row' (use clean/<transform>, clean/landmarks or misaligned/<transform>)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  "$PY" -m stn_face.cli.train "${args[@]}" seed=42 paths.log_dir=logs/cpu_celeba \
      "hydra.run.dir=logs/cpu_celeba/$row" ${EXTRA_OVERRIDES:-}
  printf '%s\t%s\t%s\n' "$row" "$(( $(date +%s) - start ))" "$(date -Is)" >> logs/cpu_celeba/times.tsv
done
