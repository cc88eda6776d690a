"""Diagnostic: does the model agree with itself on the mirrored photograph where it segments well,
and not where it is wrong? Per held-out image of fold 0: disc Dice and |vCDR difference| between the
plain view and the mirrored view (mirrored back); AUC of each against 'wrong' (disc Dice < 0.8 or
|vCDR error| > 0.2, the plain view against the reference)."""
import sys, csv
import numpy as np, torch
from pathlib import Path
from rfnet.checkpoint import load_model
from rfnet.common.gradability import apply_grading_file
from rfnet.common.metrics import cdr_report, case_metrics
from rfnet.common.segment import Segmenter
from rfnet.torch_backend import TorchBackend
from rfnet.data.mixture import load_mixture
from rfnet.data.splits import held_out_fold
from rfnet.training.datasets import DataSelection, data_specs

torch.set_num_threads(2)
ckpt, out = sys.argv[1], sys.argv[2]
specs = sys.argv[3:]
model, cfg = load_model(Path(ckpt), torch.device("cpu"), proposals=100)
apply_grading_file(cfg.grading, Path("docs/lab/cv/screen/diag_mirror_fold0/permissive.json"))
ds = held_out_fold(load_mixture(DataSelection(None, None, None, data=data_specs(specs, None)).sources()), 0, 5, 0)
model.eval()
rows = []
def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s
with TorchBackend.from_model(model, cfg, torch.device("cpu")) as be:
    core = Segmenter(be, batch_size=1)
    for i in range(len(ds)):
        s = ds.get(i)
        if s is None:
            continue
        a = core.process_batch([s.image])[0].segmentation
        b = core.process_batch([np.ascontiguousarray(s.image[:, ::-1])])[0].segmentation
        bd, bc = b.disc[:, ::-1], b.cup[:, ::-1]
        m = case_metrics(a.disc, a.cup, s.disc, s.cup)
        va = cdr_report(a.disc, a.cup).get("vcdr", np.nan) if a.disc.any() else np.nan
        vb = cdr_report(bd, bc).get("vcdr", np.nan) if bd.any() else np.nan
        rows.append(dict(name=s.name, dataset=s.meta.get("dataset", ""), dice_disc=m["dice_disc"], dice_cup=m["dice_cup"],
                         vcdr_ae=m.get("vcdr_ae", np.nan), mirror_disc_dice=dice(a.disc, bd), mirror_cup_dice=dice(a.cup, bc),
                         mirror_vcdr_diff=abs(va - vb), score=a.score))
        print(i, rows[-1], flush=True)
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
