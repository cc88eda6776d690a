#!/usr/bin/env bash
# Five folds with the margin (docs/lab/screen-cv.md, "Next"): fold K of the p command, 1 thread; --resume if started.
set -euo pipefail
cd /work/main
K=$1; MAXMIN=${2:-170}
if [ -f runs/r14_hold_p$K ]; then echo "runs/r14_hold_p$K: fold $K held"; exit 0; fi
D=/work/shared/data
DR="kind=drishti-gs,root=$D"; RE="kind=refuge,root=$D/REFUGE,split=validation"
RO="kind=rim-one-dl,root=$D/RIM-ONE_DL,partition=randomly"
OUT=runs/cv_screen_p${K}_r13
if [ -f $OUT/checkpoint_last.pt ]; then
  exec .venv/bin/rfnet train --out $OUT --resume --threads 1 --val-every 1000 --max-time-min $MAXMIN
fi
exec .venv/bin/rfnet train --preset screen --data $DR --data $RE --data $RO --fold $K --set train.fit_expert_scale=true \
    --threads 1 --val-every 1000 --seed 0 --split-seed 0 --out $OUT --max-time-min $MAXMIN
