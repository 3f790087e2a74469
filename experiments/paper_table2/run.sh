#!/usr/bin/env bash
# The landmark-regression Table 2: the five localization settings x seeds 42, 43, 44 as one Hydra
# sweep. The jobs run one after another in one process (the crops are decoded once), seed-major so a
# partial sweep still covers every setting; a result file that exists is not redone. Extra arguments
# go to every job (e.g. regression.steps=20).
set -euo pipefail
cd "$(dirname "$0")/../.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline STN_FACE_DATA="${STN_FACE_DATA:-../shared/data}"
PYTHON="${PYTHON:-.venv/bin/python}"
RESULTS="${RESULTS:-experiments/paper_table2/results}"
nice -n 5 "$PYTHON" experiments/paper_table2/regress.py -m seed=42,43,44 \
  localization=conv1_fc1,conv2_fc1,conv3_fc1,conv2_fc2,conv3_fc2 \
  "regression.results_file=$RESULTS/\${hydra:runtime.choices.localization}_seed\${seed}.json" \
  regression.skip_existing=true "$@"
"$PYTHON" experiments/paper_table2/table.py "$RESULTS"
