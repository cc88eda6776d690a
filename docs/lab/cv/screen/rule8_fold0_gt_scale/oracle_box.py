"""Fold-0 RIM-ONE DL held-out: detected box vs GT box, and disc/cup Dice with the detected box
and with the GT box given to the mask branch (oracle).

python oracle_box.py CHECKPOINT PER_IMAGE_CSV [KIND [LIMIT]]; GT_SCALE=1.3 gives the branch the GT box
scaled by 1.3 about its centre instead.
"""
import csv, os, sys, numpy as np, torch
from rfnet.checkpoint import load_model
from rfnet.data.rimone import RimOneDLDataset
from rfnet.data.drishti import DrishtiDataset
from rfnet.data.refuge import RefugeDataset
from rfnet.common.preprocess import Letterbox
from rfnet.common.metrics import case_metrics
from rfnet.common.postprocess import scale_box
from rfnet.predict import predict_images
torch.set_num_threads(2)
ck, evalcsv = sys.argv[1], sys.argv[2]
model, cfg = load_model(ck, "cpu", top_k=1, proposals=20)
kind = sys.argv[3] if len(sys.argv) > 3 else "rim-one-dl"
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 10**6
names = [r["name"] for r in csv.DictReader(open(evalcsv)) if r["dataset"] == kind][:limit]
D = "/work/shared/data"
ds = {"rim-one-dl": lambda: RimOneDLDataset(D + "/RIM-ONE_DL", "train", partition="randomly"),
      "drishti-gs": lambda: DrishtiDataset(D),
      "refuge": lambda: RefugeDataset(D + "/REFUGE", "validation")}[kind]().subset(names)
stride = cfg.backbone.input_stride
orig_detect = model.roi_heads.detect
state = {}
def oracle_detect(feats, proposals, image_size):
    boxes, scores = orig_detect(feats, proposals, image_size)
    if state.get("gt") is not None:
        boxes = boxes.clone(); boxes[0, 0] = torch.tensor(state["gt"], dtype=boxes.dtype)
    state["det"] = boxes[0, 0].detach().numpy().copy()
    return boxes, scores
model.roi_heads.detect = oracle_detect
out = []
for i in range(len(ds)):
    s = ds[i]
    h, w = s.image.shape[:2]
    lb = Letterbox.compute(h, w, cfg.input.size)
    gt_in = lb.boxes_to_input(np.asarray(s.box, np.float64)[None])[0] / stride
    gt_in = scale_box(gt_in, float(os.environ.get("GT_SCALE", "1")))
    state["gt"] = None
    seg = predict_images(model, [s.image], cfg, torch.device("cpu"))[0]
    det = state["det"].copy()
    m_det = case_metrics(seg.disc, seg.cup, s.disc, s.cup)
    state["gt"] = gt_in
    seg2 = predict_images(model, [s.image], cfg, torch.device("cpu"))[0]
    m_gt = case_metrics(seg2.disc, seg2.cup, s.disc, s.cup)
    wr = (det[2] - det[0]) / (gt_in[2] - gt_in[0]); hr = (det[3] - det[1]) / (gt_in[3] - gt_in[1])
    out.append((s.name, wr, hr, m_det["dice_disc"], m_det["dice_cup"], m_gt["dice_disc"], m_gt["dice_cup"]))
    print(f"{s.name:28s} box w x{wr:.2f} h x{hr:.2f}  det disc {m_det['dice_disc']:.3f} cup {m_det['dice_cup']:.3f}   gt-box disc {m_gt['dice_disc']:.3f} cup {m_gt['dice_cup']:.3f}", flush=True)
a = np.array([o[1:] for o in out], float)
print("mean: det disc %.4f cup %.4f | gt-box disc %.4f cup %.4f" % tuple(a[:, 2:].mean(0)))
big = np.maximum(a[:, 0], a[:, 1]) > 1.15
print("box >1.15x GT:", big.sum(), "of", len(a), " det disc on those %.3f, gt-box %.3f" % (a[big, 2].mean(), a[big, 4].mean()))
