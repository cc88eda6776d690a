"""Mask losses: every variant, a float64 hand check, and the RoIAlign-based targets."""
from __future__ import annotations

import math

import pytest
import torch

from rfnet.config import LossConfig
from rfnet.model.losses import dice_loss, focal_loss, mask_loss, mask_targets


@pytest.mark.parametrize("kind", ["focal_dice", "bce", "dice", "focal", "bce_dice"])
def test_all_variants_finite_and_differentiable(kind: str) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(3, 2, 8, 8) * 20).requires_grad_()  # large logits: stability check
    target = (torch.rand(3, 2, 8, 8) > 0.5).float()
    loss = mask_loss(logits, target, LossConfig(mask_loss=kind))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_no_positive_rois_gives_zero_with_grad() -> None:
    logits = torch.zeros(0, 2, 8, 8, requires_grad=True)
    loss = mask_loss(logits, torch.zeros(0, 2, 8, 8), LossConfig())
    assert loss.item() == 0.0 and loss.requires_grad


def test_unknown_variant_and_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="mask_loss"):
        mask_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), LossConfig(mask_loss="nope"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        mask_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 5, 5), LossConfig())


def test_focal_and_dice_hand_checked_float64() -> None:
    # one RoI, K=2 classes, 2 pixels: logits and targets chosen by hand
    logits = torch.tensor([[[[0.0, 2.0]], [[-1.0, 1.0]]]], dtype=torch.float64)  # [1,2,1,2]
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)
    alpha, gamma = 0.25, 2.0
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    fl = {}
    for k, (ls, ts) in enumerate([((0.0, 2.0), (1, 0)), ((-1.0, 1.0), (0, 1))]):
        for j, (lg, t) in enumerate(zip(ls, ts)):
            q = sig(lg)
            fl[k, j] = -t * alpha * (1 - q) ** gamma * math.log(q) - (1 - t) * (1 - alpha) * q**gamma * math.log(1 - q)
    expected_focal = (fl[0, 0] + fl[1, 0] + fl[0, 1] + fl[1, 1]) / 2  # sum over classes, mean over pixels
    assert focal_loss(logits, target, alpha, gamma).item() == pytest.approx(expected_focal, abs=1e-12)
    # paper defaults alpha=1: negative pixels contribute nothing
    only_pos = (-(1 - sig(0.0)) ** 3 * math.log(sig(0.0)) - (1 - sig(1.0)) ** 3 * math.log(sig(1.0))) / 2
    assert focal_loss(logits, target, 1.0, 3.0).item() == pytest.approx(only_pos, abs=1e-12)
    dices = []
    for ls, ts in [((0.0, 2.0), (1, 0)), ((-1.0, 1.0), (0, 1))]:
        q = [sig(v) for v in ls]
        inter = sum(a * b for a, b in zip(q, ts))
        dices.append((2 * inter + 1) / (sum(a * a for a in q) + sum(ts) + 1))
    assert dice_loss(logits, target).item() == pytest.approx(1 - sum(dices) / 2, abs=1e-12)
    total = mask_loss(logits, target, LossConfig(focal_alpha=alpha, focal_gamma=gamma, focal_lambda=0.3))
    assert total.item() == pytest.approx(0.3 * expected_focal + 1 - sum(dices) / 2, abs=1e-12)


def test_dice_perfect_prediction_is_near_zero() -> None:
    target = torch.zeros(1, 2, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    assert dice_loss(target * 40 - 20, target).item() < 1e-6


def test_mask_targets_crop_and_resize() -> None:
    gt = torch.zeros(2, 2, 64, 64)
    gt[0, 0, 16:48, 16:48] = 1  # disc of GT 0 fills the RoI below
    gt[1, 1, :, :32] = 1  # cup of GT 1: left half
    rois = torch.tensor([[0.0, 16, 16, 48, 48], [0.0, 0, 0, 64, 64]])
    t = mask_targets(gt, rois, torch.tensor([0, 1]), 8, 2)
    assert t.shape == (2, 2, 8, 8)
    assert torch.all(t[0, 0] == 1) and torch.all(t[0, 1] == 0)
    torch.testing.assert_close(t[1, 1, :, :4], torch.ones(8, 4))
    torch.testing.assert_close(t[1, 1, :, 4:], torch.zeros(8, 4))
