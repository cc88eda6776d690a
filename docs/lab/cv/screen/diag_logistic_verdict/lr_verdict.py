"""Diagnostic (not declared, nothing shipped): could one more verdict measure, a logistic risk of
"wrong" over the measures the runtime already has, refuse RIM-ONE DL's wrong-but-graded crops?

Rows: the five pooled folds' held-out rows (docs/lab/cv/screen/p0..p4), those the shipped verdict
(calibration.json) grades. Nested over the folds: the model and its limit are fitted on four folds'
rows and applied to the fifth. Run from the repository root with the project's venv.
"""
import csv
import json
import sys
from pathlib import Path

import numpy as np

from rfnet.common import gradability as G
from rfnet.screening_calibration import read_rows, refused

CAL = json.load(open("docs/lab/cv/screen/calibration.json"))
LIMITS = G.GradingLimits(**CAL["limits"])
MEASURES = ("disc_fraction", "disc_contrast", "disc_uncertainty", "cup_uncertainty", "saturation")


def features(r, raw):
    s = min(max(r.score, 1e-6), 1 - 1e-6)
    v, h, a = (float(raw[k]) for k in ("vcdr_pred", "hcdr_pred", "area_cdr_pred"))
    return [np.log(s / (1 - s)), *(r.measures[m] if m in r.measures else float(raw[m]) for m in MEASURES),
            v, abs(v - h), a / max(v * h, 1e-3)]


def fit(x, y, l2=1.0, steps=50):
    """L2-penalised logistic regression by Newton steps on standardised features -> risk function."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[np.ones(len(x)), (x - mu) / sd]
    w = np.zeros(z.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) / len(y) + l2 * np.r_[0, w[1:]] / len(y)
        hess = (z.T * (p * (1 - p))) @ z / len(y) + np.eye(len(w)) * l2 / len(y)
        w -= np.linalg.solve(hess, grad)
    return lambda xs: np.c_[np.ones(len(xs)), (xs - mu) / sd] @ w


def main():
    rows, feats = [], []
    for k in range(5):
        path = Path(f"docs/lab/cv/screen/p{k}/per_image.csv")
        raw = {x["name"]: x for x in csv.DictReader(open(path))}
        for r in read_rows([path]):
            if not refused(r, CAL["min_disc_score"], LIMITS):
                rows.append((k, r))
                feats.append(features(r, raw[r.name]))
    x = np.nan_to_num(np.array(feats, float))
    y = np.array([r.wrong for _, r in rows], float)
    fold = np.array([k for k, _ in rows])
    ds = np.array([r.dataset for _, r in rows])
    crop = ds == "rim-one-dl"
    print(f"graded rows {len(rows)}, wrong {int(y.sum())}; RIM-ONE DL graded {crop.sum()}, wrong {int(y[crop].sum())}")
    for keep in (0.97, 0.95, 0.90, 0.85, 0.80):
        wg = kept = 0
        for k in range(5):
            tr, te = (fold != k) & crop, (fold == k) & crop
            risk = fit(x[tr], y[tr])
            limit = np.quantile(risk(x[tr])[y[tr] == 0], keep)
            graded = risk(x[te]) <= limit
            wg += int((graded & (y[te] == 1)).sum())
            kept += int((graded & (y[te] == 0)).sum())
        well = int((y[crop] == 0).sum())
        print(f"limit keeping {keep:.0%} of the training folds' well crops: RIM-ONE DL wrong but graded "
              f"{wg} of 339 ({wg / 339:.1%}), well-segmented graded crops kept {kept}/{well} ({kept / well:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
