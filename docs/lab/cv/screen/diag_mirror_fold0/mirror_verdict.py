"""Among the rows the shipped verdict grades (calibration.json applied to limits-off rows by
rfnet.screening_calibration.refused), how many wrong ones would a limit on the mirrored view's
disc agreement refuse, at a limit keeping 97 % / 95 % of the well-segmented graded rows?
Usage: mirror_verdict.py PER_IMAGE_CSV MIRROR_CSV [COLUMN]"""
import csv, json, math, sys
from pathlib import Path
from rfnet.common import gradability as G
from rfnet.screening_calibration import read_rows, refused

rows = read_rows([Path(sys.argv[1])])
mir = {x['name']: x for x in csv.DictReader(open(sys.argv[2]))}
col = sys.argv[3] if len(sys.argv) > 3 else 'mirror_disc_dice'
cal = json.load(open('docs/lab/cv/screen/calibration.json'))
limits = G.GradingLimits(**cal['limits'])
for ds in sorted({r.dataset for r in rows if r.name in mir}):
    g = [r for r in rows if r.name in mir and r.dataset == ds]
    gr = [r for r in g if not refused(r, cal['min_disc_score'], limits)]
    w = [r for r in gr if r.wrong]; ok = [r for r in gr if not r.wrong]
    print(f"{ds}: {len(g)} images, graded {len(gr)}, wrong but graded {len(w)}, well kept {len(ok)}/{sum(not r.wrong for r in g)}")
    a = sorted(float(mir[r.name][col]) for r in ok)
    for keep in (0.97, 0.95):
        thr = a[int(math.floor((1 - keep) * len(a)))] if a else 0
        left = sum(float(mir[r.name][col]) >= thr for r in w)
        print(f"   limit {thr:.4f} (keeps {sum(v >= thr for v in a)}/{len(a)} of the graded well ones): wrong but graded {len(w)} -> {left}")
