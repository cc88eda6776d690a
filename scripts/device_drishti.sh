#!/usr/bin/env bash
# Issue 8 on a lent GPU machine (the `device` tool): train one preset on a Drishti-GS1 fold,
# evaluate the held-out fold, run the CUDA-marked tests and the PyTorch-CUDA FPS, and leave
# the results in $OUT (at most 8 files, as the device tool brings back).
#
#   mkdir -p .gpu && cp -r ../shared/data .gpu/drishti      # once, here (.gpu/ is git-ignored)
#   device run: command "bash scripts/device_drishti.sh .gpu/drishti", carry [".gpu/drishti"]
#
# Environment knobs: PRESET (paper), FOLD (0), EPOCHS (100), LR_STEP (30), TRAIN_MIN (7: the
# device gives 15 minutes per session in all, start-up included), DEVICE (cuda), WORKERS (8),
# BACKENDS (the three PyTorch CUDA runners), OUT (device_out). The device machine has torch, OpenCV, numpy, matplotlib and tqdm but no
# network, so the project is installed with --no-deps (or used from the checkout).
set -euo pipefail
DATA=${1:?usage: scripts/device_drishti.sh DRISHTI_ROOT}
PRESET=${PRESET:-paper}
FOLD=${FOLD:-0}
EPOCHS=${EPOCHS:-100}
LR_STEP=${LR_STEP:-30}
TRAIN_MIN=${TRAIN_MIN:-7}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-8}
OUT=${OUT:-device_out}
BACKENDS=${BACKENDS:-pytorch-cuda,pytorch-cuda-fp16,pytorch-cuda-graph}
PY=${PYTHON:-python3}
RUN=runs/device_${PRESET}_f${FOLD}
mkdir -p "$OUT" runs
LOG="$RUN.log"
: > "$LOG"
step() { echo "== $(date +%T) $*" | tee -a "$LOG"; }

step "machine"
{ nvidia-smi -L || true; "$PY" -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cv2', cv2.__version__)"; } 2>&1 | tee -a "$LOG"
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1; then
    step "pip install failed (see above); using the checkout on PYTHONPATH"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

step "CUDA-marked tests"
"$PY" -m pytest -q -m cuda -p no:cacheprovider 2>&1 | tail -n 15 | tee -a "$LOG" || true

step "train $PRESET, fold $FOLD/5, $EPOCHS epochs (lr x0.1 every $LR_STEP), at most $TRAIN_MIN min"
"$PY" -m rfnet.train --dataset drishti-gs --data-root "$DATA" --fold "$FOLD" --folds 5 --seed 0 \
    --preset "$PRESET" --epochs "$EPOCHS" --lr-step "$LR_STEP" --device "$DEVICE" --workers "$WORKERS" \
    --max-time-min "$TRAIN_MIN" --no-progress --overwrite --out "$RUN" 2>&1 | grep -v "iteration" | tee -a "$LOG"

step "evaluate the held-out fold"
"$PY" -m rfnet.evaluate --checkpoint "$RUN/checkpoint_best.pt" --dataset drishti-gs --data-root "$DATA" \
    --fold "$FOLD" --folds 5 --seed 0 --device "$DEVICE" --no-progress --no-segmentations --overwrite \
    --out "$RUN/eval" 2>&1 | tee -a "$LOG"

step "PyTorch CUDA FPS (end to end, held-out images)"
"$PY" benchmarks/bench.py --model "$RUN/checkpoint_best.pt" --dataset drishti-gs --data "$DATA" --limit 10 \
    --backends "$BACKENDS" --warmup 5 --iterations 30 \
    --overwrite --out "$RUN/bench" 2>&1 | tail -n 30 | tee -a "$LOG" || true

step "collect"
cp "$RUN/metrics.csv" "$OUT/metrics.csv"
cp "$RUN/curves.png" "$OUT/curves.png"
cp "$RUN/eval/summary.json" "$OUT/eval_summary.json"
cp "$RUN/eval/per_image.csv" "$OUT/eval_per_image.csv"
[ -f "$RUN/bench/report.md" ] && cp "$RUN/bench/report.md" "$OUT/bench_report.md"
[ -d "$RUN/eval/overlays" ] && tar -czf "$OUT/overlays.tar.gz" -C "$RUN/eval" overlays
cp "$LOG" "$OUT/device.log"
ls -l "$OUT"
