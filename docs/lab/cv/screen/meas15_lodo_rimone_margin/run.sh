#!/usr/bin/env bash
# Measurement 15 of docs/lab/screen-cv.md: RIM-ONE DL left out, trained again, scored with the margin.
# Usage (from the repository root): run.sh train   (starts, or resumes, the training; 2 threads)
#                                   run.sh score   (the last checkpoint on the 339 crops; the shipped verdict applied)
set -euo pipefail
D=${DATA:-/work/shared/data}
OUT=runs/cv_screen_lodo_rimone_r14
L=docs/lab/cv/screen/meas15_lodo_rimone_margin
case ${1:-} in
  train)
    if [ -f $OUT/checkpoint_last.pt ]; then
      exec .venv/bin/rfnet train --out $OUT --resume --threads 2 --val-every 1000
    fi
    exec .venv/bin/rfnet train --preset screen --data kind=drishti-gs,root=$D \
        --data kind=refuge,root=$D/REFUGE,split=validation --val-fraction 0 --set train.fit_expert_scale=true \
        --threads 2 --val-every 1000 --out $OUT ;;
  score)
    .venv/bin/rfnet evaluate --checkpoint $OUT/checkpoint_last.pt \
        --data kind=rim-one-dl,root=$D/RIM-ONE_DL,partition=randomly --grading $L/limits_off.json \
        --proposals 20 --crop-margin 1.5 --no-progress --threads 2 --out runs/eval/meas15
    cp runs/eval/meas15/per_image.csv runs/eval/meas15/summary.json $L/
    .venv/bin/python - > $L/verdict.json <<'PY'
import json
from rfnet.config import SCREEN_GRADING_LIMITS, SCREEN_MIN_DISC_SCORE, SCREEN_REFERRAL_VCDR
print(json.dumps({"min_disc_score": SCREEN_MIN_DISC_SCORE, "limits": SCREEN_GRADING_LIMITS,
                  "referral_vcdr": SCREEN_REFERRAL_VCDR}))
PY
    .venv/bin/rfnet calibrate --per-image $L/per_image.csv --apply $L/verdict.json ;;
  *) echo "usage: $0 train|score" >&2; exit 2 ;;
esac
