"""Rule 10 (docs/lab/screen-cv.md): two gt_scale runs vs the three seeds of measurement 7, fold 0."""
import json
base = {s: json.load(open(f"runs/eval/{d}/summary.json"))["per_dataset"]
        for s, d in (("0", "screen_p0"), ("1", "screen_p0_s1"), ("2", "screen_p0_s2"))}
new = {s: json.load(open(f"runs/eval/screen_p0_circ_s{s}/summary.json"))["per_dataset"] for s in ("0", "1")}
keys = ("dice_disc", "dice_cup", "vcdr_mae_masks")
ok = True
for ds in ("drishti-gs", "refuge", "rim-one-dl"):
    print(f"{ds}:")
    for k in keys:
        b = [base[s][ds][k] for s in "012"]
        n = [new[s][ds][k] for s in "01"]
        m = sum(n) / 2
        print(f"  {k:15s} seeds 0/1/2 {b[0]:.4f} / {b[1]:.4f} / {b[2]:.4f}   circular s0/s1 {n[0]:.4f} / {n[1]:.4f}  mean {m:.4f}")
        if ds == "rim-one-dl" and k == "dice_cup":
            need = max(b) + 0.01; c = m >= need
        elif ds == "rim-one-dl" and k == "vcdr_mae_masks":
            need = max(b); c = m <= need
        elif ds != "rim-one-dl" and k == "dice_cup":
            need = min(b) - 0.005; c = m >= need
        elif ds != "rim-one-dl" and k == "vcdr_mae_masks":
            need = max(b) + 0.005; c = m <= need
        else:
            continue
        ok &= c
        print(f"  {'':15s} rule: {'>=' if k != 'vcdr_mae_masks' else '<='} {need:.4f}: {'met' if c else 'NOT met'}")
print("RULE 10:", "met" if ok else "not met")
