#!/usr/bin/env bash
# Rule 13: fold 1's held-out images, the same checkpoint without and with the crop margin (1 thread each, side by side).
set -euo pipefail
cd /work/main
D=/work/shared/data
DR="kind=drishti-gs,root=$D"; RE="kind=refuge,root=$D/REFUGE,split=validation"
RO="kind=rim-one-dl,root=$D/RIM-ONE_DL,partition=randomly"
CK=runs/cv_screen_p1_r13/checkpoint_last.pt
for m in 1 1.5; do
  .venv/bin/rfnet evaluate --checkpoint $CK --data $DR --data $RE --data $RO --fold 1 --grading runs/permissive.json \
      --proposals 20 --crop-margin $m --no-progress --threads 1 --out runs/eval/screen_p1_r13_m$m > runs/eval/screen_p1_r13_m$m.log 2>&1 &
done
wait
.venv/bin/python docs/lab/cv/screen/rule13_fold1_crop_margin/verdict.py runs/eval/screen_p1_r13_m1 \
    runs/eval/screen_p1_r13_m1.5 | tee runs/eval/rule13_verdict.txt
