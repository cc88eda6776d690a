"""Rule 13 of docs/lab/screen-cv.md: fold 1's held-out rows without and with the crop margin.

Usage (from the repository root): verdict.py NO_MARGIN_PER_IMAGE_CSV MARGIN_PER_IMAGE_CSV
Prints per dataset disc / cup Dice, vCDR MAE and rows changed; then the shipped verdict
(docs/lab/cv/screen/calibration.json, not recalibrated) on both: wrong but graded and the share of
well-segmented rows kept; then the declared bars.
"""
import csv
import json
import math
import sys
from pathlib import Path

from rfnet.common import gradability as G
from rfnet.screening_calibration import read_rows, refused

CAL = json.load(open("docs/lab/cv/screen/calibration.json"))
LIMITS = G.GradingLimits(**CAL["limits"])


def mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def cell(row, key):
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return math.nan


def figures(rows, raw):
    g = [r for r in rows if not refused(r, CAL["min_disc_score"], LIMITS)]
    well = [r for r in rows if not r.wrong]
    return {"disc": mean([r.dice_disc for r in rows]), "cup": mean([cell(raw[r.name], "dice_cup") for r in rows]),
            # vCDR MAE as the earlier rules read it (vcdr_ae: the rows the default checks grade), and
            # over every row whatever the verdict (vcdr_ae_all), for the record
            "mae": mean([cell(raw[r.name], "vcdr_ae") for r in rows]),
            "mae_all": mean([cell(raw[r.name], "vcdr_ae_all") for r in rows]), "wrong": sum(r.wrong for r in rows),
            "wrong_graded": sum(r.wrong for r in g), "well_kept": sum(not r.wrong for r in g) / max(1, len(well)),
            "n": len(rows)}


a = {r.name: r for r in read_rows([Path(sys.argv[1])])}
b = {r.name: r for r in read_rows([Path(sys.argv[2])])}
raw_a = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]))}
raw_b = {r["name"]: r for r in csv.DictReader(open(sys.argv[2]))}
assert set(a) == set(b), "the two runs scored different images"
out = {}
for ds in sorted({r.dataset for r in a.values()}):
    ra = [r for r in a.values() if r.dataset == ds]
    rb = [b[r.name] for r in ra]
    fa, fb = figures(ra, raw_a), figures(rb, raw_b)
    changed = sum(raw_a[x.name]["dice_disc"] != raw_b[x.name]["dice_disc"] or raw_a[x.name]["dice_cup"]
                  != raw_b[x.name]["dice_cup"] for x in ra)
    out[ds] = (fa, fb, changed)
    print(f"{ds} ({fa['n']}): disc {fa['disc']:.4f} -> {fb['disc']:.4f}, cup {fa['cup']:.4f} -> {fb['cup']:.4f}, "
          f"vCDR MAE {fa['mae']:.4f} -> {fb['mae']:.4f} (all rows {fa['mae_all']:.4f} -> {fb['mae_all']:.4f}), wrong (limits off) {fa['wrong']} -> {fb['wrong']}, "
          f"rows changed {changed}; shipped verdict: wrong but graded {fa['wrong_graded']} -> {fb['wrong_graded']}, "
          f"well kept {fa['well_kept']:.1%} -> {fb['well_kept']:.1%}")
fa, fb, _ = out["rim-one-dl"]
bars = {
    "RIM-ONE DL disc Dice rises by >= 0.02": fb["disc"] - fa["disc"] >= 0.02,
    "RIM-ONE DL cup Dice not lower by > 0.005": fb["cup"] >= fa["cup"] - 0.005,
    "RIM-ONE DL vCDR MAE not higher by > 0.005": fb["mae"] <= fa["mae"] + 0.005,
    "Drishti-GS and REFUGE rows unchanged": all(out[d][2] == 0 for d in out if d != "rim-one-dl"),
    "RIM-ONE DL wrong but graded not more": fb["wrong_graded"] <= fa["wrong_graded"],
    "RIM-ONE DL well kept >= 95 %": fb["well_kept"] >= 0.95,
}
for k, v in bars.items():
    print(f"  {'met' if v else 'NOT MET'}: {k}")
print("rule 13:", "met" if all(bars.values()) else "not met")
