"""Diagnostic: the mask branch alone on the mirrored RoI (same box): disc / cup agreement with the
plain RoI, in the RoI's M x M grid, per held-out image of fold 0."""
import sys, csv
import numpy as np, torch
from pathlib import Path
from rfnet.checkpoint import load_model
from rfnet.common.segment import Segmenter
from rfnet.torch_backend import TorchBackend
from rfnet.data.mixture import load_mixture
from rfnet.data.splits import held_out_fold
from rfnet.training.datasets import DataSelection, data_specs
from rfnet.model.pooling import pool_image, make_rois
from rfnet.model.boxes import scale_boxes

torch.set_num_threads(1)
ckpt, out = sys.argv[1], sys.argv[2]
model, cfg = load_model(Path(ckpt), torch.device("cpu"), proposals=100)
ds = held_out_fold(load_mixture(DataSelection(None, None, None, data=data_specs(sys.argv[3:], None)).sources()), 0, 5, 0)
model.eval()
mh = cfg.mask_head
def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * (a & b).sum() / s)
rows = []
with TorchBackend.from_model(model, cfg, torch.device("cpu")) as be, torch.no_grad():
    core = Segmenter(be, batch_size=1)
    for i in range(len(ds)):
        s = ds.get(i)
        if s is None:
            continue
        t, _ = core.preprocess(s.image)
        x = torch.from_numpy(t[None])
        o = model(x)
        rois = make_rois(scale_boxes(o["boxes"][:, :1], mh.box_scale))
        pooled = pool_image(x, rois, mh.mask_size, mh.sampling_ratio)
        a = torch.sigmoid(model.mask_head(None, None, pooled))[0] > 0.5
        b = torch.sigmoid(model.mask_head(None, None, pooled.flip(-1)).flip(-1))[0] > 0.5
        rows.append(dict(name=s.name, roi_mirror_disc_dice=dice(a[0].numpy(), b[0].numpy()),
                         roi_mirror_cup_dice=dice(a[1].numpy(), b[1].numpy())))
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
print("wrote", out, len(rows))
