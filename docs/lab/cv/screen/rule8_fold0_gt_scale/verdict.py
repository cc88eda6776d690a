"""Rules 8, 10 and 11 (docs/lab/screen-cv.md): runs of a change vs the three seeds of measurement 7, fold 0.

python verdict.py 8    (mask_head.gt_scale runs)     python verdict.py 10   (circular padding runs)
python verdict.py 11   (Drishti-GS x2 mix: rule 5's run and rule 11's seed 1)
Run from the repository root; it reads the per-image rows committed under docs/lab/cv/screen/.
"""
import csv
import sys

CV = "docs/lab/cv/screen"
rule = sys.argv[1] if len(sys.argv) > 1 else "8"
label, runs = {
    "8": ("gt_scale", {"0": "rule8_fold0_gt_scale/seed0", "1": "rule8_fold0_gt_scale/seed1"}),
    "10": ("circular", {"0": "rule10_fold0_circular/seed0", "1": "rule10_fold0_circular/seed1"}),
    "11": ("DR x2", {"0": "rule5_fold0_drishti_weight2", "1": "rule11_fold0_drishti_weight2/seed1"}),
}[rule]
seeds = {"0": "p0", "1": "meas7_fold0_seed1", "2": "meas7_fold0_seed2"}
keys = {"dice_disc": "dice_disc", "dice_cup": "dice_cup", "vcdr_mae_masks": "vcdr_ae"}


def per_dataset(folder):
    """Mean of each measure per dataset over the rows that have it (as rfnet evaluate's summary)."""
    with open(f"{CV}/{folder}/per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for ds in ("drishti-gs", "refuge", "rim-one-dl"):
        out[ds] = {}
        for k, col in keys.items():
            v = [float(r[col]) for r in rows if r["dataset"] == ds and r[col]]
            out[ds][k] = sum(v) / len(v)
    return out


base = {s: per_dataset(d) for s, d in seeds.items()}
new = {s: per_dataset(d) for s, d in runs.items()}
# RIM-ONE DL bars: rule 8 on disc and cup Dice (best seed + 0.01); rules 10 and 11 on cup Dice (best seed
# + 0.01) and vCDR MAE (no higher than the highest seed)
rim_bars = {"8": {"dice_disc": 0.01, "dice_cup": 0.01}}.get(rule, {"dice_cup": 0.01, "vcdr_mae_masks": 0.0})
ok = True
for ds in ("drishti-gs", "refuge", "rim-one-dl"):
    print(f"{ds}:")
    for k in keys:
        b = [base[s][ds][k] for s in seeds]
        n = [new[s][ds][k] for s in runs]
        m = sum(n) / len(n)
        print(f"  {k:15s} seeds 0/1/2 {b[0]:.4f} / {b[1]:.4f} / {b[2]:.4f}   {label} s{'/s'.join(runs)} "
              f"{' / '.join(f'{x:.4f}' for x in n)}  mean {m:.4f}")
        if ds == "rim-one-dl":
            if k not in rim_bars:
                continue
            need = max(b) + rim_bars[k]
        else:
            need = min(b) - 0.005 if k == "dice_cup" else max(b) + 0.005 if k == "vcdr_mae_masks" else None
            if need is None:
                continue
        c = m <= need if k == "vcdr_mae_masks" else m >= need
        ok &= c
        print(f"  {'':15s} rule: {'<=' if k == 'vcdr_mae_masks' else '>='} {need:.4f}: {'met' if c else 'NOT met'}")
declared = {"8": 2, "10": 2, "11": 3}[rule]  # runs the rule was declared on
if len(runs) < declared:
    print(f"RULE {rule}: no verdict ({len(runs)} of the {declared} declared runs; their mean: {'met' if ok else 'not met'})")
else:
    print(f"RULE {rule}:", "met" if ok else "not met", f"({len(runs)} runs)")
