"""Rule 14 as a picture: RIM-ONE DL per fold, without (A) and with (B) the crop margin.

Usage (from the repository root): plot.py A_ROOT B_ROOT OUT.png (each root holding p0..p4/per_image.csv).
Left: disc and cup Dice per fold; right: crops wrong with the limits off (disc Dice < 0.8 or
|vCDR error| > 0.2).
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rfnet.crossval import by_dataset, fold_stats, is_wrong, read_rows  # noqa: E402

FOLDS = [f"p{k}" for k in range(5)]


def per_fold(root: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"disc": [], "cup": [], "wrong": []}
    for k in FOLDS:
        rows = by_dataset(read_rows(root / k))["rim-one-dl"]
        stats = fold_stats(rows)  # the per-dataset figures of rfnet crossval (and judge.py)
        out["disc"].append(stats["dice_disc"])
        out["cup"].append(stats["dice_cup"])
        out["wrong"].append(sum(is_wrong(r) for r in rows))
    return out


a, b = per_fold(Path(sys.argv[1])), per_fold(Path(sys.argv[2]))
x = np.arange(len(FOLDS))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
for key, marker in (("disc", "o"), ("cup", "s")):
    ax1.plot(x, a[key], marker=marker, ls="--", color="grey", label=f"{key}, no margin")
    ax1.plot(x, b[key], marker=marker, ls="-", color="tab:green" if key == "disc" else "tab:blue",
             label=f"{key}, margin x1.5")
ax1.set(xticks=x, xticklabels=[f"fold {k}" for k in range(5)], ylabel="Dice (held-out crops)",
        title="RIM-ONE DL, Dice per fold")
ax1.legend(fontsize=8)
ax2.bar(x - 0.2, a["wrong"], 0.4, color="grey", label="no margin")
ax2.bar(x + 0.2, b["wrong"], 0.4, color="tab:green", label="margin x1.5")
ax2.set(xticks=x, xticklabels=[f"fold {k}" for k in range(5)], ylabel="crops",
        title="RIM-ONE DL, wrong with the limits off")
ax2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[3], dpi=80)
print(f"wrote {sys.argv[3]}")
