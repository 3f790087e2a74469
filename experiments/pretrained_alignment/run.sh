#!/usr/bin/env bash
# Run rows of the pretrained-alignment study one after another (never two at once on a 2-core machine)
# into logs/pretrained_alignment/<study>/<row>/seed<k>, each trained row with every seed in $SEEDS
# (default "1 2 3"). A run whose metrics.json exists is skipped, so the script resumes where it stopped;
# an unfinished run's folder is removed and the run starts again. Each finished run appends its row,
# seed, wall time, machine and load to logs/pretrained_alignment/times.tsv. To stop after the run under
# way, create logs/pretrained_alignment/STOP (removed as the script stops).
# Rows (frozen dlib_resnet unless said):
#   clean/<t>            1.6x crops, transform t trained (similarity, affine, projective, tps)
#   misaligned/<t>       the same crops under the CPU study's misalignment (experiment=pretrained_dlib_misaligned)
#   finetune/projective  clean/projective with the backbone fine-tuned at 0.01x the learning rate
#   clean/identity, misaligned/identity   the start frame alone, no training (train=false: one run, seed-free)
#   clean/plain          plain 1.3x MTCNN crops resized to 150 px, no transformer (stn-face-eval backbone=dlib_resnet)
#   reference/dlib_5point   dlib's own detector + 5-point chip (dlib_reference.py), no training
#   SEEDS="1 2 3" bash experiments/pretrained_alignment/run.sh clean/identity clean/projective
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${STN_FACE_DATA:?set STN_FACE_DATA to the data folder (see README: Data)}"
export NO_ALBUMENTATIONS_UPDATE=1
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-1 2 3}
LOGS=logs/pretrained_alignment
mkdir -p "$LOGS"
machine=$("$PY" -c "from stn_face.machine import describe; print(describe())")

run() {  # run <row> <seed or -> <command...>: once, timed, into $LOGS/<row>[/seed<k>]
  local row=$1 seed=$2; shift 2
  local dir=$LOGS/$row; [ "$seed" = - ] || dir=$dir/seed$seed
  if [ -f "$dir/metrics.json" ]; then echo "$dir: done, skipped"; return; fi
  if [ -f "$LOGS/STOP" ]; then rm -f "$LOGS/STOP"; echo "$LOGS/STOP found: stopped before $dir"; exit 0; fi
  rm -rf "$dir"
  echo "== $row seed $seed: $*"
  local start; start=$(date +%s)
  "$@" "hydra.run.dir=$dir"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$seed" "$(( $(date +%s) - start ))" "$(date -Is)" \
      "$machine" "$(cut -d' ' -f1-3 /proc/loadavg)" "$*" >> "$LOGS/times.tsv"
}

for row in "$@"; do
  study=${row%%/*}; variant=${row#*/}
  case "$row" in
    reference/dlib_5point)
      chips=$LOGS/reference/dlib_5point_embeddings.npz
      mkdir -p "$(dirname "$chips")"
      [ -f "$chips" ] || "$PY" experiments/pretrained_alignment/dlib_reference.py --output "$chips"
      run "$row" - "$PY" -m stn_face.cli.eval "embeddings=$chips" eval=lfw ;;
    clean/plain)
      run "$row" - "$PY" -m stn_face.cli.eval backbone=dlib_resnet eval=lfw ;;
    clean/identity|misaligned/identity)
      experiment=pretrained_dlib; [ "$study" = clean ] || experiment=pretrained_dlib_misaligned
      run "$row" - "$PY" -m stn_face.cli.train "experiment=$experiment" transform=identity train=false ;;
    clean/*|misaligned/*|finetune/projective)
      args=(experiment=pretrained_dlib "transform=$variant")
      [ "$study" = misaligned ] && args=(experiment=pretrained_dlib_misaligned "transform=$variant")
      [ "$study" = finetune ] && args+=(model.freeze_backbone=false model.backbone_lr_mult=0.01)
      for seed in $SEEDS; do
        run "$row" "$seed" "$PY" -m stn_face.cli.train "${args[@]}" "seed=$seed" ${EXTRA_OVERRIDES:-}
      done ;;
    *) echo "unknown row '$row' (see the top of $0)" >&2; exit 2 ;;
  esac
done
