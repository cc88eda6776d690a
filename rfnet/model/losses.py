"""Mask losses of the multi-class mask branch (paper section 3.4, Table 3 variants).

Paper::

    L_mask = lambda * L_FL + L_DL
    L_FL = sum_k [ -p_k alpha (1-q_k)^gamma log q_k - (1-p_k)(1-alpha) q_k^gamma log(1-q_k) ]
    L_DL = 1 - sum_k 2 p_k q_k / (p_k^2 + q_k^2)

with p the target, q the predicted probability, K = 2 classes (disc, cup), alpha = 1,
gamma = 3, lambda = 0.3. Two deliberate readings:

* **alpha** is configurable (``cfg.loss.focal_alpha``, default 1.0 as published). With
  alpha = 1 the negative term is multiplied by ``1 - alpha = 0``: the focal loss then only
  pulls foreground pixels up and background pixels are constrained by the Dice term alone
  (its denominator grows with false positives). We keep the paper's value as the default so
  that the reproduction is faithful, and expose alpha so that e.g. 0.25/0.75 can be tried.
* **Dice** as written (``1 - sum_k dice_k``) ranges over [1 - K, 1], i.e. it goes negative
  for K = 2 and its scale relative to the focal term (hence the meaning of lambda) depends
  on K. We use the per-class mean ``1 - mean_k dice_k`` (in [0, 1], zero at a perfect
  prediction): same gradient direction up to a factor 1/K, each class (disc, cup) weighted
  equally. Sums run over the pixels of each
  RoI; the per-RoI, per-class Dice is averaged over RoIs and classes, with a smoothing term
  of 1 in numerator and denominator so empty masks are well defined.

The focal term is summed over classes and averaged over pixels and RoIs; BCE is averaged
over everything. Targets may be soft (RoIAlign-resampled GT masks, as in Mask R-CNN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rfnet.config import LossConfig

DICE_SMOOTH = 1.0


def focal_loss(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """Paper focal loss: logits/target [R,K,S,S] -> scalar (sum over K, mean over R and pixels).

    Computed from logits with ``logsigmoid`` for numerical stability.
    """
    q = torch.sigmoid(logits)
    pos = -target * alpha * (1.0 - q).pow(gamma) * F.logsigmoid(logits)
    neg = -(1.0 - target) * (1.0 - alpha) * q.pow(gamma) * F.logsigmoid(-logits)
    return (pos + neg).sum(dim=1).mean()


def dice_loss(logits: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """``1 - mean_{RoI,k} (2 sum p q + s) / (sum p^2 + sum q^2 + s)``; logits/target [R,K,S,S]."""
    q = torch.sigmoid(logits).flatten(2)
    p = target.flatten(2)
    dice = (2.0 * (p * q).sum(-1) + smooth) / ((p * p).sum(-1) + (q * q).sum(-1) + smooth)
    return 1.0 - dice.mean()


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross entropy with logits, averaged over all elements."""
    return F.binary_cross_entropy_with_logits(logits, target)


def mask_loss(logits: Tensor, target: Tensor, cfg: LossConfig) -> Tensor:
    """Mask loss variant ``cfg.mask_loss`` on positive RoIs: logits/target [R,K,S,S] -> scalar.

    ``focal_dice`` = lambda*focal + dice (paper), ``bce``, ``dice``, ``focal``, ``bce_dice`` = bce + dice.
    With R = 0 (no positive RoI) returns a zero that still depends on ``logits`` (keeps DDP/grad
    bookkeeping simple).
    """
    if logits.shape != target.shape:
        raise ValueError(f"mask logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    kind = cfg.mask_loss
    if kind == "focal_dice":
        return cfg.focal_lambda * focal_loss(logits, target, cfg.focal_alpha, cfg.focal_gamma) + dice_loss(logits, target)
    if kind == "bce":
        return bce_loss(logits, target)
    if kind == "dice":
        return dice_loss(logits, target)
    if kind == "focal":
        return focal_loss(logits, target, cfg.focal_alpha, cfg.focal_gamma)
    if kind == "bce_dice":
        return bce_loss(logits, target) + dice_loss(logits, target)
    raise ValueError(f"loss.mask_loss must be one of focal_dice, bce, dice, focal, bce_dice; got {kind!r}")


def mask_targets(gt_masks: Tensor, rois: Tensor, gt_index: Tensor, mask_size: int, sampling_ratio: int) -> Tensor:
    """Crop each positive RoI's GT masks and resize them to the mask size.

    ``gt_masks`` [N,K,H,W] float (all images' masks concatenated, input resolution),
    ``rois`` [R,5] (batch index ignored, xyxy input pixels), ``gt_index`` [R] int64 into
    ``gt_masks`` -> ``[R,K,mask_size,mask_size]`` soft targets in [0,1]. Uses RoIAlign
    (aligned=True) like the feature pooling, so targets and features line up exactly.
    """
    from torchvision.ops import roi_align  # local: keeps this module light to import

    rois_gt = torch.cat((gt_index.to(rois.dtype).unsqueeze(1), rois[:, 1:]), dim=1)
    return roi_align(gt_masks, rois_gt, output_size=(mask_size, mask_size), spatial_scale=1.0,
                     sampling_ratio=sampling_ratio, aligned=True).clamp(0.0, 1.0)
