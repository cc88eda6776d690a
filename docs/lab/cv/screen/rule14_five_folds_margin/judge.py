"""Rule 14 of docs/lab/screen-cv.md: the five pooled folds without (A) and with (B) the crop margin.

Usage (from the repository root): judge.py A_ROOT B_ROOT, each holding p0..p4/per_image.csv of
rfnet evaluate (limits off, --crop-margin 1 and 1.5). Prints, pooled per dataset: disc / cup Dice,
vCDR MAE over every row (vcdr_ae_all), rows changed; each arm's cross-fitted verdict
(rfnet.screening_calibration.cross_fitted, the rule-2 procedure with its defaults); the bars.
"""
import sys
from pathlib import Path

import numpy as np

from rfnet.crossval import by_dataset, fold_stats, read_rows
from rfnet.screening_calibration import cross_fitted, report_table, read_rows as verdict_rows

FOLDS = [f"p{k}" for k in range(5)]


def arm(root: Path) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    rows = [r for k in FOLDS for r in read_rows(root / k)]
    acc = {}
    for ds, part in by_dataset(rows).items():
        st = fold_stats(part)
        st["mae_all"] = float(np.mean([float(r["vcdr_ae_all"]) for r in part]))
        st["cells"] = {r["name"]: (r["dice_disc"], r["dice_cup"], r["vcdr_pred"]) for r in part}
        acc[ds] = st
    return acc, cross_fitted(verdict_rows([root / k / "per_image.csv" for k in FOLDS]), 0.5, 0.97)


(a, va), (b, vb) = arm(Path(sys.argv[1])), arm(Path(sys.argv[2]))
changed = {}
for ds in a:
    fa, fb = a[ds], b[ds]
    assert set(fa["cells"]) == set(fb["cells"]), "the two arms scored different images"
    changed[ds] = sum(fa["cells"][n] != fb["cells"][n] for n in fa["cells"])
    print(f"{ds} ({fa['images']}): disc {fa['dice_disc']:.4f} -> {fb['dice_disc']:.4f}, cup {fa['dice_cup']:.4f} -> "
          f"{fb['dice_cup']:.4f}, vCDR MAE all rows {fa['mae_all']:.4f} -> {fb['mae_all']:.4f} (graded rows "
          f"{fa['vcdr_mae_masks']:.4f} -> {fb['vcdr_mae_masks']:.4f}), rows changed {changed[ds]}")
print("A, cross-fitted verdict:\n" + report_table(va))
print("B, cross-fitted verdict:\n" + report_table(vb))
ra, rb = a["rim-one-dl"], b["rim-one-dl"]
bars = {
    "RIM-ONE DL disc Dice rises by >= 0.02": rb["dice_disc"] - ra["dice_disc"] >= 0.02,
    "RIM-ONE DL cup Dice not lower by > 0.005": rb["dice_cup"] >= ra["dice_cup"] - 0.005,
    "RIM-ONE DL vCDR MAE (every row) not higher by > 0.005": rb["mae_all"] <= ra["mae_all"] + 0.005,
    "Drishti-GS and REFUGE rows unchanged": all(n == 0 for d, n in changed.items() if d != "rim-one-dl"),
    "RIM-ONE DL wrong but graded (B) <= (A)": vb["rim-one-dl"]["wrong_graded"] <= va["rim-one-dl"]["wrong_graded"],
    "Drishti-GS, REFUGE wrong but graded (B) <= (A)": all(vb[d]["wrong_graded"] <= va[d]["wrong_graded"]
                                                          for d in ("drishti-gs", "refuge")),
    "B: >= 95 % well kept, every dataset": all(vb[d]["well_kept"] >= 0.95 for d in vb if d != "all"),
}
for k, v in bars.items():
    print(f"  {'met' if v else 'NOT MET'}: {k}")
