"""Measurement 12: a model's RIM-ONE DL rows split into the crops it trained on and fold 0's held-out ones."""
import csv, sys, statistics as st
def rows(p, ds='rim-one-dl'):
    return [r for r in csv.DictReader(open(p)) if r['dataset'] == ds]
a = rows(sys.argv[1]); held = {r['name'] for r in rows(sys.argv[2])}
v = lambda r, k: float(r[k]) if r[k] not in ('', 'nan') else None
def mean(xs):
    xs = [x for x in xs if x is not None]
    return st.fmean(xs) if xs else float('nan')
def bias(g):
    return mean(v(r, 'vcdr_pred') - v(r, 'vcdr_gt') for r in g if v(r, 'vcdr_pred') is not None)
for lab, g in (('trained on', [r for r in a if r['name'] not in held]), ('held out', [r for r in a if r['name'] in held])):
    print(f"{lab:10s} {len(g):3d} crops: disc {mean(v(r,'dice_disc') for r in g):.4f} cup {mean(v(r,'dice_cup') for r in g):.4f}"
          f" vCDR MAE {mean(v(r,'vcdr_ae_all') for r in g):.4f} bias {bias(g):+.3f}")
    for lo, hi in [(0, .2), (.2, .3), (.3, .5), (.5, 1)]:
        s = [r for r in g if lo <= v(r, 'vcdr_gt') < hi]
        if s:
            print(f"    true vCDR {lo:.1f}-{hi:.1f}: {len(s):3d} crops, cup {mean(v(r,'dice_cup') for r in s):.3f}, bias {bias(s):+.3f}")
