"""Rules 8 and 10 (docs/lab/screen-cv.md): two runs vs the three seeds of measurement 7, fold 0.

python verdict.py 8    (mask_head.gt_scale runs)     python verdict.py 10   (circular padding runs)
"""
import json
import sys

rule = sys.argv[1] if len(sys.argv) > 1 else "8"
prefix, label = {"8": ("screen_p0_gs_s", "gt_scale"), "10": ("screen_p0_circ_s", "circular")}[rule]
base = {s: json.load(open(f"runs/eval/{d}/summary.json"))["per_dataset"]
        for s, d in (("0", "screen_p0"), ("1", "screen_p0_s1"), ("2", "screen_p0_s2"))}
new = {s: json.load(open(f"runs/eval/{prefix}{s}/summary.json"))["per_dataset"] for s in ("0", "1")}
keys = ("dice_disc", "dice_cup", "vcdr_mae_masks")
# RIM-ONE DL bars: rule 8 on disc and cup Dice (best seed + 0.01); rule 10 on cup Dice (best seed + 0.01)
# and vCDR MAE (no higher than the highest seed)
rim_bars = {"8": {"dice_disc": 0.01, "dice_cup": 0.01}, "10": {"dice_cup": 0.01, "vcdr_mae_masks": 0.0}}[rule]
ok = True
for ds in ("drishti-gs", "refuge", "rim-one-dl"):
    print(f"{ds}:")
    for k in keys:
        b = [base[s][ds][k] for s in "012"]
        n = [new[s][ds][k] for s in "01"]
        m = sum(n) / 2
        print(f"  {k:15s} seeds 0/1/2 {b[0]:.4f} / {b[1]:.4f} / {b[2]:.4f}   {label} s0/s1 {n[0]:.4f} / {n[1]:.4f}  mean {m:.4f}")
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
print(f"RULE {rule}:", "met" if ok else "not met")
