"""Rule 13 of docs/lab/screen-cv.md: fold 1's held-out rows without and with the crop margin.

Usage (from the repository root): verdict.py NO_MARGIN_EVAL_DIR MARGIN_EVAL_DIR (each holding
rfnet evaluate's per_image.csv). Prints per dataset disc / cup Dice and vCDR MAE
(rfnet.crossval.fold_stats: the MAE over the rows the default checks grade, as the earlier rules
read it; over every row, vcdr_ae_all, for the record) and rows changed; then the shipped verdict
(docs/lab/cv/screen/calibration.json, not recalibrated, rfnet.screening_calibration.report): wrong
but graded and the share of well-segmented rows kept; then the declared bars.
"""
import json
import sys
from pathlib import Path

import numpy as np

from rfnet.common import gradability as G
from rfnet.crossval import by_dataset, fold_stats, is_wrong, read_rows
from rfnet.screening_calibration import read_rows as verdict_rows, report

CAL = json.load(open("docs/lab/cv/screen/calibration.json"))
LIMITS = G.GradingLimits(**CAL["limits"])


def figures(eval_dir: Path) -> dict[str, dict[str, float]]:
    """Per dataset: fold_stats, the MAE over every row, the wrong rows, and the shipped verdict."""
    verdict = report(verdict_rows([eval_dir / "per_image.csv"]), CAL["min_disc_score"], LIMITS)
    out = {}
    for ds, rows in by_dataset(read_rows(eval_dir)).items():
        st = fold_stats(rows)
        st["mae_all"] = float(np.mean([float(r["vcdr_ae_all"]) for r in rows]))
        st["wrong"] = sum(is_wrong(r) for r in rows)
        st["shipped_wrong_graded"] = verdict[ds]["wrong_graded"]
        st["shipped_well_kept"] = verdict[ds]["well_kept"]
        st["cells"] = {r["name"]: (r["dice_disc"], r["dice_cup"]) for r in rows}
        out[ds] = st
    return out


a, b = figures(Path(sys.argv[1])), figures(Path(sys.argv[2]))
changed = {}
for ds in a:
    fa, fb = a[ds], b[ds]
    assert set(fa["cells"]) == set(fb["cells"]), "the two runs scored different images"
    changed[ds] = sum(fa["cells"][n] != fb["cells"][n] for n in fa["cells"])
    print(f"{ds} ({fa['images']}): disc {fa['dice_disc']:.4f} -> {fb['dice_disc']:.4f}, cup {fa['dice_cup']:.4f} -> "
          f"{fb['dice_cup']:.4f}, vCDR MAE {fa['vcdr_mae_masks']:.4f} -> {fb['vcdr_mae_masks']:.4f} (all rows "
          f"{fa['mae_all']:.4f} -> {fb['mae_all']:.4f}), wrong (limits off) {fa['wrong']} -> {fb['wrong']}, "
          f"rows changed {changed[ds]}; shipped verdict: wrong but graded {fa['shipped_wrong_graded']} -> "
          f"{fb['shipped_wrong_graded']}, well kept {fa['shipped_well_kept']:.1%} -> {fb['shipped_well_kept']:.1%}")
fa, fb = a["rim-one-dl"], b["rim-one-dl"]
bars = {
    "RIM-ONE DL disc Dice rises by >= 0.02": fb["dice_disc"] - fa["dice_disc"] >= 0.02,
    "RIM-ONE DL cup Dice not lower by > 0.005": fb["dice_cup"] >= fa["dice_cup"] - 0.005,
    "RIM-ONE DL vCDR MAE not higher by > 0.005": fb["vcdr_mae_masks"] <= fa["vcdr_mae_masks"] + 0.005,
    "Drishti-GS and REFUGE rows unchanged": all(n == 0 for d, n in changed.items() if d != "rim-one-dl"),
    "RIM-ONE DL wrong but graded not more": fb["shipped_wrong_graded"] <= fa["shipped_wrong_graded"],
    "RIM-ONE DL well kept >= 95 %": fb["shipped_well_kept"] >= 0.95,
}
for k, v in bars.items():
    print(f"  {'met' if v else 'NOT MET'}: {k}")
print("rule 13:", "met" if all(bars.values()) else "not met")
