"""Among the rows the shipped verdict grades (calibration.json's limits applied to limits-off rows),
how many wrong ones would a limit on the mirrored view's disc agreement refuse, at a limit keeping
97 % / 95 % of the well-segmented graded rows?"""
import csv, json, math, sys
rows = {x['name']: x for x in csv.DictReader(open(sys.argv[1]))}
mir = {x['name']: x for x in csv.DictReader(open(sys.argv[2]))}
COL = sys.argv[3] if len(sys.argv) > 3 else 'mirror_disc_dice'
cal = json.load(open('docs/lab/cv/screen/calibration.json'))
L = cal['limits']
f = lambda x, k: float(x[k]) if x[k] not in ('', 'nan') else math.nan
def graded(x):
    if x['reason'] or f(x, 'score') < cal['min_disc_score']: return False
    if f(x, 'disc_fraction') > L['max_disc_fraction'] or f(x, 'disc_contrast') < L['min_disc_contrast']: return False
    if x['field_edge'] == '1' and not L['min_disc_field_ratio'] <= f(x, 'disc_field_ratio') <= L['max_disc_field_ratio']: return False
    return True
def wrong(x):
    e = f(x, 'vcdr_ae_all'); return f(x, 'dice_disc') < 0.8 or (not math.isnan(e) and e > 0.2)
for ds in sorted({x['dataset'] for n, x in rows.items() if n in mir}):
    g = [x for n, x in rows.items() if n in mir and x['dataset'] == ds]
    gr = [x for x in g if graded(x)]
    w = [x for x in gr if wrong(x)]; ok = [x for x in gr if not wrong(x)]
    allok = [x for x in g if not wrong(x)]
    print(f"{ds}: {len(g)} images, graded {len(gr)}, wrong but graded {len(w)}, well kept {len(ok)}/{len(allok)}")
    a = sorted(float(mir[x['name']][COL]) for x in ok)
    for keep in (0.97, 0.95):
        thr = a[int(math.floor((1 - keep) * len(a)))] if a else 0
        left = [x for x in w if float(mir[x['name']][COL]) >= thr]
        kept = sum(v >= thr for v in a)
        print(f"   limit {thr:.4f} (keeps {kept}/{len(a)} of the graded well ones): wrong but graded {len(w)} -> {len(left)}")
