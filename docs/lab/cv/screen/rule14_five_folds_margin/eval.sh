#!/usr/bin/env bash
# Rule 14: fold K's held-out images, its model's last checkpoint, without (A) and with (B) the margin.
set -euo pipefail
cd /work/main
K=$1
D=/work/shared/data
DR="kind=drishti-gs,root=$D"; RE="kind=refuge,root=$D/REFUGE,split=validation"
RO="kind=rim-one-dl,root=$D/RIM-ONE_DL,partition=randomly"
CK=runs/cv_screen_p${K}_r13/checkpoint_last.pt
for arm in A:1 B:1.5; do
  a=${arm%%:*}; m=${arm##*:}
  .venv/bin/rfnet evaluate --checkpoint $CK --data $DR --data $RE --data $RO --fold $K --grading runs/permissive.json \
      --proposals 20 --crop-margin $m --no-progress --threads 1 --out runs/eval/r14/$a/p$K > runs/eval/r14_${a}_p$K.log 2>&1
done
