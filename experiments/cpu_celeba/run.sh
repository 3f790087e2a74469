#!/usr/bin/env bash
# Run rows of the CPU study one after another (never two at once on a 2-core machine), each with every
# seed in $SEEDS (default "42 43 44"), into logs/cpu_celeba/<study>/<row>/seed<k>. A run whose
# metrics.json exists is skipped, so the script resumes where it stopped. Each finished run appends
# its command, seed, wall time, machine and load to logs/cpu_celeba/times.tsv; an unfinished run's
# folder is removed and the run starts again.
# Rows: clean/<t> or misaligned/<t> for a transform t (identity, similarity, affine, projective, tps),
# clean/landmarks (5-point aligned crops, no transformer) and clean/landmarks_projective; a row name ending
# in _3x (misaligned/projective_3x) runs 900 steps instead of 300, with every schedule stretched.
#   SEEDS="42 43 44" bash experiments/cpu_celeba/run.sh misaligned/identity misaligned/projective
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${STN_FACE_DATA:?set STN_FACE_DATA to the data folder (see README: Data)}"
export NO_ALBUMENTATIONS_UPDATE=1
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-42 43 44}
mkdir -p logs/cpu_celeba
machine=$("$PY" -c "from stn_face.machine import describe; print(describe())")
for row in "$@"; do
  study=${row%%/*}; variant=${row#*/}; long=()
  if [[ $variant == *_3x ]]; then
    # three times the budget, every schedule stretched with it (warm-up, margin ramp, cosine, grids)
    variant=${variant%_3x}
    long=(trainer.max_steps=900 scheduler.warmup_steps=300 model.margin_warmup_steps=300
          model.margin_ramp_steps=600 callbacks.alignment_grid.every_n_steps=300)
  fi
  case "$study/$variant" in
    clean/landmarks) args=(experiment=cpu_celeba_landmarks transform=identity) ;;
    clean/landmarks_projective) args=(experiment=cpu_celeba_landmarks transform=projective) ;;
    clean/*) args=(experiment=cpu_celeba "transform=$variant") ;;
    misaligned/*) args=(experiment=cpu_celeba_misaligned "transform=$variant") ;;
    *) echo "unknown row '$row' (use clean/<transform>, clean/landmarks, clean/landmarks_projective or misaligned/<transform>)" >&2; exit 2 ;;
  esac
  for seed in $SEEDS; do
    dir=logs/cpu_celeba/$row/seed$seed
    if [ -f "$dir/metrics.json" ]; then echo "$dir: done, skipped"; continue; fi
    rm -rf "$dir"  # an interrupted run starts again from step 0 (its seed fixes everything else)
    cmd=(stn-face-train "${args[@]}" ${long[@]+"${long[@]}"} "seed=$seed" paths.log_dir=logs/cpu_celeba "hydra.run.dir=$dir")
    echo "== $row seed $seed: ${cmd[*]}"
    start=$(date +%s)
    "$PY" -m stn_face.cli.train "${cmd[@]:1}" ${EXTRA_OVERRIDES:-}
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$seed" "$(( $(date +%s) - start ))" "$(date -Is)" \
        "$machine" "$(cut -d' ' -f1-3 /proc/loadavg)" "${cmd[*]}" >> logs/cpu_celeba/times.tsv
  done
done
