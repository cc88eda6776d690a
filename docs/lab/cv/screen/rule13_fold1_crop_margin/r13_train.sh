#!/usr/bin/env bash
# Rule 13 (docs/lab/screen-cv.md): a fold-1 model of the p command, 2 threads.
set -euo pipefail
cd /work/main
D=/work/shared/data
DR="kind=drishti-gs,root=$D"; RE="kind=refuge,root=$D/REFUGE,split=validation"
RO="kind=rim-one-dl,root=$D/RIM-ONE_DL,partition=randomly"
.venv/bin/rfnet train --preset screen --data $DR --data $RE --data $RO --fold 1 --set train.fit_expert_scale=true \
    --threads 2 --val-every 1000 --seed 0 --split-seed 0 --out runs/cv_screen_p1_r13 --max-time-min 100
