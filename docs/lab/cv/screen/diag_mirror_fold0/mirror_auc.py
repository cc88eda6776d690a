import csv, sys, math
r = list(csv.DictReader(open(sys.argv[1])))
f = lambda x, k: float(x[k]) if x[k] not in ('', 'nan') else math.nan
def wrong(x):
    e = f(x, 'vcdr_ae')
    return f(x, 'dice_disc') < 0.8 or (not math.isnan(e) and e > 0.2)
def auc(pos, neg):
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
for ds in sorted({x['dataset'] for x in r}) + ['all']:
    g = [x for x in r if ds in ('all', x['dataset'])]
    w = [x for x in g if wrong(x)]; ok = [x for x in g if not wrong(x)]
    print(f"{ds}: {len(g)} images, {len(w)} wrong")
    if not w or not ok: continue
    for k, sign in (('mirror_disc_dice', -1), ('mirror_cup_dice', -1), ('mirror_vcdr_diff', 1), ('score', -1)):
        pos = [sign * f(x, k) for x in w if not math.isnan(f(x, k))]; neg = [sign * f(x, k) for x in ok if not math.isnan(f(x, k))]
        # how many wrong are refused when 95 % of the right ones are kept
        thr = sorted(neg)[int(math.ceil(0.95 * len(neg))) - 1]
        print(f"   {k:18s} AUC {auc(pos, neg):.3f}; limit keeping 95 % of the others refuses {sum(p > thr for p in pos)} of {len(pos)} wrong")
