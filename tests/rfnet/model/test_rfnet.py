"""The whole RF-Net: output contract, losses, learning on synthetic fundus images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rfnet.config import ModelConfig, get_preset
from rfnet.model import OUTPUT_NAMES, RFNet, build_model, recalibrate_batchnorm


@pytest.mark.parametrize("batch,k", [(1, 10), (2, 10), (2, 1)])
def test_eval_output_contract(light_cfg: ModelConfig, batch: int, k: int) -> None:
    torch.manual_seed(0)
    light_cfg.roi_heads.detections_per_img = k
    model = build_model(light_cfg).eval()
    assert isinstance(model, RFNet)
    with torch.no_grad():
        out = model(torch.randn(batch, 3, 128, 128))
    assert tuple(out) == OUTPUT_NAMES
    assert out["boxes"].shape == (batch, k, 4) and out["scores"].shape == (batch, k)
    assert out["masks"].shape == (batch, k, 2, 56, 56)
    assert all(v.dtype == torch.float32 for v in out.values())
    s = out["scores"]
    assert torch.all(s[:, :-1] >= s[:, 1:]) and torch.all((s >= 0) & (s <= 1))
    assert torch.all((out["masks"] >= 0) & (out["masks"] <= 1))
    pad = s == 0
    assert torch.all(out["boxes"][pad] == 0)
    b = out["boxes"][~pad]
    assert torch.all(b[:, 2] >= b[:, 0]) and torch.all(b[:, 3] >= b[:, 1]) and b.max() <= 128


def test_bad_inputs_are_reported(light_cfg: ModelConfig) -> None:
    model = build_model(light_cfg)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.eval()(torch.zeros(1, 3, 100, 100))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model.eval()(torch.zeros(1, 1, 128, 128))
    with pytest.raises(ValueError, match="needs one target dict per image"):
        model.train()(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="pooling"):
        cfg = get_preset("light")
        cfg.mask_head.pooling = "bogus"  # type: ignore[assignment]
        build_model(cfg)


@pytest.mark.parametrize("pooling", ["fusion", "pyramid"])
def test_training_losses_both_poolings(light_cfg: ModelConfig, fundus, pooling: str) -> None:
    torch.manual_seed(0)
    light_cfg.mask_head.pooling = pooling  # type: ignore[assignment]
    model = build_model(light_cfg).train()
    rng = np.random.default_rng(0)
    (x0, t0), (x1, t1) = fundus(128, rng), fundus(128, rng)
    t1 = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64),
          "masks": torch.zeros((0, 2, 128, 128))}  # an image without a disc must work too
    losses = model(torch.stack((x0, x1)), [t0, t1])
    assert set(losses) == {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box", "loss_mask"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0
    sum(losses.values()).backward()
    assert model.mask_head.predictor.weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_few_steps_lower_the_loss(light_cfg: ModelConfig, fundus) -> None:
    torch.manual_seed(0)
    model = build_model(light_cfg).train()
    rng = np.random.default_rng(1)
    samples = [fundus(128, rng) for _ in range(2)]
    images, targets = torch.stack([s[0] for s in samples]), [s[1] for s in samples]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for _ in range(6):
        torch.manual_seed(0)  # same RoI sampling each step: compare like with like
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert totals[-1] < 0.85 * totals[0] and totals[-1] < min(totals[:3]), totals


def test_overfits_one_image(light_cfg: ModelConfig, fundus, paste) -> None:
    """Disc Dice > 0.9 on one synthetic image within 80 Adam steps (about 30 s on 2 idle cores)."""
    torch.manual_seed(0)
    light_cfg.mask_head.max_positive_rois = 2  # one object: a couple of RoIs teach the mask as well
    light_cfg.roi_heads.detections_per_img = 1  # only the top detection is scored
    model = build_model(light_cfg).train()
    x, t = fundus(128, np.random.default_rng(3))
    x = x[None]
    gt_disc = t["masks"][0, 0].numpy() > 0.5
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dices: list[float] = []
    for step in range(1, 81):
        loss = sum(model(x, [t]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 20 and step % 10 == 0:
            recalibrate_batchnorm(model, [x])  # short run: running BN stats lag the weights
            model.eval()
            with torch.no_grad():
                out = model(x)
            model.train()
            pred = paste(out["masks"][0, 0, 0].numpy(), out["boxes"][0, 0].numpy(), 128) > 0.5
            dices.append(float(2 * (pred & gt_disc).sum() / (pred.sum() + gt_disc.sum())))
            if dices[-1] > 0.9:
                break
    assert dices[-1] > 0.9, f"disc Dice per 10 steps: {np.round(dices, 3).tolist()}"


def test_recalibrate_batchnorm_restores_mode(light_cfg: ModelConfig) -> None:
    model = build_model(light_cfg).eval()
    recalibrate_batchnorm(model, [torch.randn(1, 3, 128, 128)])
    bn = model.backbone.stem[1]
    assert not model.training and bn.momentum == 0.1 and int(bn.num_batches_tracked) == 1
