"""Typed configuration of RF-Net: one dataclass tree from which everything is built.

This module is torch-free on purpose: the runtime (numpy + OpenCV + ONNX Runtime /
TensorRT) reads the input settings (size, normalisation, mask size, class order) from the
same dataclasses that the trainer uses, so preprocessing cannot drift between the two.

Presets
-------
``paper``  MobileNet-v1 (width 1.0) + FPN 256 channels, Fusion Feature Pooling, mask 56x56,
           focal + dice loss (lambda=0.3, alpha=1, gamma=3), 1000 test proposals, K=10
           detections (paper sections 3 and 4.2).
``light``  For CPUs and Jetson: MobileNet-v1 width 0.25, FPN 64 channels, a lighter mask
           branch and fewer proposals. Same architecture, same outputs.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from rfnet.errors import UsageError

#: Order of the mask channels in every output (model, ONNX, engine, runtime).
CLASS_NAMES: tuple[str, ...] = ("disc", "cup")

PoolingKind = Literal["fusion", "pyramid"]
MaskBranchKind = Literal["streams", "unet"]
MaskRoIKind = Literal["proposals", "jittered_gt"]
MaskLossKind = Literal["focal_dice", "bce", "dice", "focal", "bce_dice"]


@dataclass
class InputConfig:
    """Network input: letterboxed square RGB image, normalised per channel."""

    size: int = 512  # paper: resized and zero-padded to 512x512
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # At test, an image whose fundus field's edge does not show (a disc-centred crop,
    # rfnet.common.gradability.ImageQuality.field_edge) is letterboxed with its long side filling
    # 1 / crop_margin of the input, black around it, as training's zoom-out shows such crops; whole
    # fields as usual. 1 = never. Training views are unchanged. Exported as ``rfnet.crop_margin``.
    crop_margin: float = 1.0


@dataclass
class BackboneConfig:
    """MobileNet-v1 (Howard et al. 2017), trained from scratch as in the paper."""

    width_mult: float = 1.0
    pretrained_path: str | None = None  # optional state dict to load into the backbone
    # The detector (backbone, FPN, RPN, box head) runs on the input average-pooled by this factor,
    # while an image-only mask branch samples the full-resolution input: the disc is found on a
    # small image and segmented from a large one. 1 = one resolution for both (paper). Boxes stay
    # in input pixels either way.
    input_stride: int = 1


@dataclass
class FPNConfig:
    out_channels: int = 256  # P_min..P5 channels
    # Finest pyramid level: 2 = P2..P5 (paper, strides 4-32); 3 = P3..P5 (strides 8-32): P2's
    # cells serve only objects far smaller than an optic disc. The two-stream mask branch and
    # Fusion Feature Pooling need P2.
    min_level: int = 2


@dataclass
class AnchorConfig:
    """One base anchor size per pyramid level (P2..P5: strides 4, 8, 16, 32; from
    ``fpn.min_level``), times each of ``scales``, at each of ``aspect_ratios``."""

    sizes: tuple[int, ...] = (32, 64, 128, 256)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    scales: tuple[float, ...] = (1.0,)


@dataclass
class RPNConfig:
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 2000  # per level
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000  # per level
    post_nms_top_n_test: int = 1000  # paper: 1000 proposals at test time
    nms_thresh: float = 0.7
    min_size: float = 1e-3


@dataclass
class RoIHeadConfig:
    """Second stage: optic disc vs background + class-agnostic box regression."""

    pool_size: int = 7
    sampling_ratio: int = 2  # explicit: TensorRT's parser defaults to 1, ONNX to 0
    representation_size: int = 1024
    batch_size_per_image: int = 200  # paper: N = 200 sampled RoIs per image
    positive_fraction: float = 0.25  # paper: positives:negatives = 1:3
    fg_iou_thresh: float = 0.5  # paper: positive at IoU >= 0.5
    bg_iou_thresh: float = 0.5
    score_thresh: float = 0.0  # keep every candidate; outputs are fixed-size top-K anyway
    nms_thresh: float = 0.5
    detections_per_img: int = 10  # paper: the mask branch runs on the top 10 boxes (K)
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


@dataclass
class MaskHeadConfig:
    """Feature pooling + multi-class mask branch (disc, cup)."""

    pooling: PoolingKind = "fusion"  # "pyramid" = Mask R-CNN one-level pooling (Table 2)
    mask_size: int = 56  # low-level stream size; the high-level stream is mask_size // 2
    channels: int = 256
    num_convs: int = 2  # convs per stream before fusion
    num_fused_convs: int = 2  # convs after fusing the two streams
    sampling_ratio: int = 2
    num_classes: int = 2  # CLASS_NAMES
    # Cap on positive RoIs per image that get a mask loss (None = all, as in the paper).
    max_positive_rois: int | None = None
    # The mask covers the detection box scaled by this factor about its centre (1.0 = the box,
    # as in the paper): a disc outline may then extend past a slightly too tight box instead
    # of being cut straight along it. Stored in the export metadata (rfnet.mask_box_scale).
    box_scale: float = 1.0
    # "streams": the paper's two-stream branch over the pooled pyramid (rfnet.model.mask_head);
    # "unet": a U-Net over the input image pooled at mask_size x mask_size, fed the pooled
    # pyramid at mask_size / 2 and / 4 unless unet_pyramid is off (rfnet.model.unet_head; not in
    # the paper). The U-Net has unet_depth pooling steps and unet_channels at full resolution
    # (doubling per step). With the pyramid it was cross-validated and not kept; image-only, it is
    # the mid preset's branch (docs/lab/results-log.md).
    branch: MaskBranchKind = "streams"
    unet_channels: int = 16
    unet_depth: int = 4
    # False: the U-Net sees only the pooled image, not the pyramid (no gradient from the mask
    # loss reaches the backbone), as in the screen with the true disc box (docs/lab/results-log.md).
    unet_pyramid: bool = True
    # True: the image-only U-Net segments each RoI in polar coordinates about its centre (M-Net,
    # Fu et al. 2018: disc and cup become stacked bands) and its logits are mapped back to the RoI's
    # Cartesian grid (rfnet.model.unet_head); outputs unchanged. Needs unet_pyramid = False.
    unet_polar: bool = False
    # True (needs unet_polar): every 3x3 conv of the U-Net pads the angle axis circularly (radius:
    # zeros), so no level of the U-Net sees an edge at angle 0. No extra columns, same parameters.
    unet_polar_circular: bool = False
    # Where the mask branch's training RoIs come from: "proposals" (paper, Mask R-CNN: the
    # positive sampled proposals, IoU >= 0.5 with the disc, so often loose boxes), or
    # "jittered_gt": gt_rois_per_image copies of each ground-truth disc box per image, each
    # side moved by up to +-gt_jitter of the box's width or height, like the detection boxes
    # the branch is run on at test time (rfnet.model.boxes.jitter_boxes); then each copy is scaled
    # about its centre by a factor log-uniform in gt_scale (lo, hi), so the branch also learns boxes
    # larger or smaller than the disc (detectors draw large discs too large: docs/lab/screen-cv.md).
    train_rois: MaskRoIKind = "proposals"
    gt_rois_per_image: int = 2
    gt_jitter: float = 0.1
    gt_scale: tuple[float, float] = (1.0, 1.0)


@dataclass
class LossConfig:
    """Mask loss variant (paper Table 3) and its parameters."""

    mask_loss: MaskLossKind = "focal_dice"
    focal_lambda: float = 0.3
    focal_alpha: float = 1.0
    focal_gamma: float = 3.0
    rpn_weight: float = 1.0
    box_weight: float = 1.0
    mask_weight: float = 1.0


@dataclass
class TrainConfig:
    """Paper section 4.2: SGD momentum 0.9, lr 0.01 x0.1 every 30 epochs, 100 epochs, batch 4."""

    epochs: int = 100
    # > 0: train for this many iterations instead (epochs = ceil(iterations / iterations per
    # epoch)), so runs on 40 and on 50 images see the same number of updates.
    iterations: int = 0
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # "sgd" (paper: momentum SGD) or "adamw" (Adam with decoupled weight decay; betas
    # (momentum, 0.999), so ``momentum`` is its first-moment decay). AdamW wants a learning rate
    # about ten times lower (1e-3).
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr_step_epochs: int = 30
    lr_gamma: float = 0.1
    warmup_iters: int = 100
    grad_clip: float | None = 10.0
    augment: bool = True
    # Photometric jitter strength (rfnet.data.augment.ColorJitter), applied with the flips when
    # augmenting; 0 = off, the paper's augmentation (flips and quarter turns only).
    color_jitter: float = 0.0
    # Geometric jitter (rfnet.data.geometry.GeometryJitter), not in the paper, off by default:
    # zoom about the disc up to x(1 + scale_jitter), rotation up to +-rotate_deg degrees,
    # shift up to +-translate of the input side; crop_size > 0 trains on crop_size squares of
    # the letterboxed input that contain the disc (cheaper iterations at a large input size).
    scale_jitter: float = 0.0
    rotate_deg: float = 0.0
    translate: float = 0.0
    crop_size: int = 0
    # "step": x lr_gamma every lr_step_epochs (paper); "cosine": half-cosine decay to 0 over
    # all epochs after the warm-up.
    lr_schedule: Literal["step", "cosine"] = "step"
    # Fit grading.vcdr_expert_scale on the training images' ground truth before training (needs
    # a dataset with the experts' CDRs, Drishti-GS; the images' masks are read once more).
    fit_expert_scale: bool = False
    # Speed options (rfnet.training.speed measures them): bfloat16 autocast of the forward
    # pass (CPUs with AVX512_BF16 / AMX, recent GPUs; elsewhere the trainer uses float32, as
    # emulated bfloat16 is far slower) and channels-last tensors.
    bf16: bool = False
    channels_last: bool = False
    # torchrun: convert BatchNorm to SyncBatchNorm (per-process batches of 4 give poor statistics).
    sync_bn: bool = False


#: Provisional minimum disc score until cross-validation calibrates it (docs/design.md,
#: "Gradability"): half the lowest score a real disc has been seen with (0.03, drishtiGS_002 held
#: out in fold 2 of an earlier light model). Also the value for models exported before
#: ``rfnet.min_disc_score`` existed.
DEFAULT_MIN_DISC_SCORE = 0.015
#: The ``mid`` preset's minimum disc score, calibrated by cross-validation of its recipe
#: (``python -m rfnet.grading_calibration``, margin 0.5; docs/lab/results-log.md, "Gradability of the mid
#: preset"). A model trained with another recipe needs its own.
MID_MIN_DISC_SCORE = 0.499


@dataclass
class GradingConfig:
    """When a result may carry a CDR (``rfnet.common.gradability``), and on which scales: the
    model-specific part.

    ``min_disc_score`` is a property of the trained weights: derive it with
    ``python -m rfnet.grading_calibration`` from held-out scores (cross-validation) and set it
    with ``--set grading.min_disc_score=X`` (training) or ``--min-disc-score X`` (export). It is
    exported as ``rfnet.min_disc_score``.
    """

    min_disc_score: float = DEFAULT_MIN_DISC_SCORE
    # (a, b): the vertical CDR is also reported on the experts' scale, a * vcdr + b, a line
    # fitted on the training images' ground truth (their masks' vCDR against the experts' mean
    # CDR, rfnet.common.metrics.fit_expert_scale) when ``train.fit_expert_scale`` is set and the
    # dataset has expert CDRs (Drishti-GS). None: not fitted, no such value is reported.
    # Exported as ``rfnet.vcdr_expert_scale``.
    vcdr_expert_scale: tuple[float, float] | None = None
    # Limits of the detection checks (rfnet.common.gradability.GradingLimits: max_disc_fraction,
    # min / max_disc_field_ratio, min_disc_contrast), calibrated on cross-validation folds with
    # ``python -m rfnet.grading_calibration --limits``; {}: the defaults. Exported as
    # ``rfnet.grading_limits``.
    limits: dict[str, float] = field(default_factory=dict)
    # A gradable eye whose vCDR (on the experts' scale when fitted) is at least this is referred
    # (glaucoma suspect); chosen on cross-validation folds. None: no referral. ``rfnet.referral_vcdr``.
    referral_vcdr: float | None = None


@dataclass
class ModelConfig:
    """Everything needed to build, train and deploy one RF-Net variant."""

    name: str = "paper"
    input: InputConfig = field(default_factory=InputConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    mask_head: MaskHeadConfig = field(default_factory=MaskHeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``UsageError`` (a ValueError) naming them."""
        return _from_dict(cls, data, "config")


#: Options cross-validation rejected, removed from the model: ``key -> (the value that meant "off",
#: the last commit that had the option)``. A stored config with the "off" value loads (the key is
#: dropped); one that used the option is refused, naming the commit to load it with.
REMOVED_OPTIONS: dict[str, tuple[Any, str]] = {
    "config.mask_head.image_channels": (0, "cd70f7e"),
    "config.mask_head.unet_polar_wrap": (0, "cd70f7e"),
    "config.train.soft_targets": (False, "cd70f7e"),
}


def _drop_removed(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` without the :data:`REMOVED_OPTIONS` it holds at their "off" value; UsageError for one in use."""
    out = dict(data)
    for key in list(out):
        removed = REMOVED_OPTIONS.get(f"{where}.{key}")
        if removed is None:
            continue
        off, commit = removed
        if out[key] != off:
            raise UsageError(f"{where}.{key} = {out[key]!r}: this option was removed (cross-validation did not adopt "
                             f"it; docs/lab/results-log.md); the last version that had it is commit {commit}: load this "
                             "checkpoint with that version")
        del out[key]
    return out


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = _drop_removed(data, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)  # JSON has no tuples
        else:
            kwargs[name] = value
    return cls(**kwargs)


def paper_config() -> ModelConfig:
    """RF-Net as published."""
    return ModelConfig(name="paper")


def _cpu_rpn() -> RPNConfig:
    """The proposal counts of the CPU presets (light, mid): 500 proposals in training, 300 at test time."""
    return RPNConfig(pre_nms_top_n_train=1000, post_nms_top_n_train=500, pre_nms_top_n_test=300, post_nms_top_n_test=300)


def light_config() -> ModelConfig:
    """A narrower RF-Net for CPUs and Jetson: same graph, fewer channels and proposals."""
    return ModelConfig(
        name="light",
        backbone=BackboneConfig(width_mult=0.25),
        fpn=FPNConfig(out_channels=64),
        rpn=_cpu_rpn(),
        roi_heads=RoIHeadConfig(representation_size=256, batch_size_per_image=128),
        mask_head=MaskHeadConfig(channels=64, num_convs=2, num_fused_convs=1, max_positive_rois=8),
    )


def mid_config() -> ModelConfig:
    """Between light and paper, with the recipe that trains it on a 2-core CPU (docs/lab/results-log.md).

    MobileNet-v1 width 0.5, FPN 64 channels; input letterboxed to 768 px (a Drishti-GS disc
    spans about 135 px of it, 90 px of a 512 input). The mask branch is a U-Net over the input
    image pooled at 128 x 128 from the detection box scaled by 1.2 (a disc outline is not cut
    along a tight box), resampled to polar coordinates about the box centre (disc and cup become
    stacked bands; M-Net), without the pyramid, and trained on jittered copies of the
    ground-truth disc box rather than on proposals: the boxes it meets at test time (not in the
    paper; 5-fold cross-validated, docs/lab/results-log.md). Training: 1500 iterations of AdamW (lr 1e-3,
    weight decay 0.01) with a cosine learning rate, in float32, on 512 px crops of the 768 px
    input that contain the disc, flips and quarter turns plus zoom (x1.25), rotation (+-15
    degrees), shift (10 %) and colour jitter (20 %).
    """
    return ModelConfig(
        name="mid",
        input=InputConfig(size=768),
        backbone=BackboneConfig(width_mult=0.5),
        fpn=FPNConfig(out_channels=64),
        rpn=_cpu_rpn(),
        roi_heads=RoIHeadConfig(representation_size=512, batch_size_per_image=128),
        # channels / convs are the two-stream branch's: kept so that the earlier recipes train again
        # with the --set options docs/lab/results-log.md names (the Cartesian U-Net with FPN 128 until
        # 2026-12-05: fpn.out_channels=128, mask_head.unet_polar=false).
        mask_head=MaskHeadConfig(channels=128, num_convs=2, num_fused_convs=2, max_positive_rois=8, box_scale=1.2,
                                 branch="unet", mask_size=128, unet_pyramid=False, unet_polar=True,
                                 train_rois="jittered_gt"),
        train=TrainConfig(iterations=1500, optimizer="adamw", lr=1e-3, weight_decay=0.01, lr_schedule="cosine",
                          bf16=False, color_jitter=0.2, scale_jitter=0.25, rotate_deg=15.0, translate=0.1,
                          crop_size=512),
        grading=GradingConfig(min_disc_score=MID_MIN_DISC_SCORE),
    )


#: The ``screen`` preset's verdict and referral, chosen by ``rfnet calibrate`` on the held-out rows of
#: its pooled 5-fold cross-validation over Drishti-GS, REFUGE and RIM-ONE DL, scored with the
#: preset's crop margin (docs/results.md, "The screening verdict"; rule 14 of docs/lab/screen-cv.md).
#: The referral threshold is on the experts' scale of the model (``train.fit_expert_scale``).
SCREEN_MIN_DISC_SCORE = 0.37
SCREEN_GRADING_LIMITS = {"max_disc_fraction": 1.0, "min_disc_field_ratio": 0.0891, "max_disc_field_ratio": 0.4544,
                         "min_disc_contrast": 1.1054, "max_disc_uncertainty": 0.4085}
SCREEN_REFERRAL_VCDR = 0.6109
#: Disc-centred crops fill 2/3 of the input (``InputConfig.crop_margin``): rule 14 of docs/lab/screen-cv.md.
SCREEN_CROP_MARGIN = 1.5


def screen_config() -> ModelConfig:
    """The model a screening programme deploys: one disc found on a small image, segmented from a large one.

    The detector (MobileNet-v1 width 0.5, a 64-channel FPN over P3..P5, no P2) runs on the
    1024 px input average-pooled to 512 px; its anchors (40, 80, 160 px at P3, P4, P5, each x1,
    x1.6, x2.56, square) cover discs from 5 % to over 90 % of a 512 px view: a 45-degree Canon
    fundus (REFUGE, discs about 14 % of the field), an optic-nerve-head field (Drishti-GS, about
    20 %), a disc-centred crop (RIM-ONE DL, 65-95 %). The mask branch is the mid preset's polar
    U-Net (128 x 128, the box x1.2), sampling the full 1024 px input. At test a disc-centred crop
    (no fundus field edge) is letterboxed to 2/3 of the input (:data:`SCREEN_CROP_MARGIN`), so the
    box the mask branch reads around a disc that fills the crop stays inside the image. Training:
    AdamW with a cosine learning rate, zoom up to x1.5 either way, rotation, shift and colour
    jitter, on several datasets mixed by weight (``rfnet.train --data``; docs/results.md).
    """
    return ModelConfig(
        name="screen",
        input=InputConfig(size=1024, crop_margin=SCREEN_CROP_MARGIN),
        backbone=BackboneConfig(width_mult=0.5, input_stride=2),
        fpn=FPNConfig(out_channels=64, min_level=3),
        anchors=AnchorConfig(sizes=(40, 80, 160), aspect_ratios=(1.0,), scales=(1.0, 1.6, 2.56)),
        rpn=RPNConfig(pre_nms_top_n_train=1000, post_nms_top_n_train=300, pre_nms_top_n_test=200,
                      post_nms_top_n_test=20),
        roi_heads=RoIHeadConfig(representation_size=256, batch_size_per_image=128),
        mask_head=MaskHeadConfig(box_scale=1.2, branch="unet", mask_size=128, unet_pyramid=False, unet_polar=True,
                                 train_rois="jittered_gt"),
        train=TrainConfig(iterations=2000, optimizer="adamw", lr=1e-3, weight_decay=0.01, lr_schedule="cosine",
                          color_jitter=0.2, scale_jitter=0.5, rotate_deg=15.0, translate=0.1),
        grading=GradingConfig(min_disc_score=SCREEN_MIN_DISC_SCORE, limits=dict(SCREEN_GRADING_LIMITS),
                              referral_vcdr=SCREEN_REFERRAL_VCDR),
    )


PRESETS = {"paper": paper_config, "mid": mid_config, "light": light_config, "screen": screen_config}


def get_preset(name: str) -> ModelConfig:
    """Return a fresh config for preset ``name`` (``UsageError`` (a ValueError) lists the known ones)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None
