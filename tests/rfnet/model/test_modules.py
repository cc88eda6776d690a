"""Shapes and invariants of every RF-Net module."""
from __future__ import annotations

import pytest
import torch

from rfnet.config import AnchorConfig, MaskHeadConfig, RoIHeadConfig, RPNConfig
from rfnet.model.anchors import AnchorGenerator
from rfnet.model.backbone import MobileNetV1, build_backbone, scaled_channels
from rfnet.model.boxes import BoxCoder, fpn_levels, jitter_boxes, match_boxes, per_image_nms
from rfnet.model.fpn import FPN
from rfnet.model.mask_head import MultiClassMaskHead
from rfnet.model.pooling import FusionFeaturePooling, PyramidFeaturePooling, build_mask_pooler, level_select, make_rois
from rfnet.model.roi_heads import RoIHeads
from rfnet.model.rpn import RegionProposalNetwork

torch.manual_seed(0)


@pytest.mark.parametrize("width,expected", [(1.0, [128, 256, 512, 1024]), (0.25, [32, 64, 128, 256])])
def test_backbone_channels_and_strides(width: float, expected: list[int]) -> None:
    net = MobileNetV1(width).eval()
    assert net.out_channels == expected
    with torch.no_grad():
        feats = net(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 96 // s) for c, s in zip(expected, (4, 8, 16, 32))]
    assert scaled_channels(32, 0.1) == 8


def test_backbone_pretrained_path(tmp_path) -> None:
    from rfnet.config import BackboneConfig

    src = MobileNetV1(0.25)
    path = tmp_path / "bb.pt"
    torch.save(src.state_dict(), path)
    loaded = build_backbone(BackboneConfig(width_mult=0.25, pretrained_path=str(path)))
    assert torch.equal(loaded.stem[0].weight, src.stem[0].weight)
    with pytest.raises(ValueError, match="bb.pt.*do not fit"):
        build_backbone(BackboneConfig(width_mult=0.5, pretrained_path=str(path)))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_backbone(BackboneConfig(width_mult=0.25, pretrained_path=str(tmp_path / "missing.pt")))


def _pyramid(b: int = 2, c: int = 16, size: int = 128) -> list[torch.Tensor]:
    return [torch.randn(b, c, size // s, size // s) for s in (4, 8, 16, 32)]


def test_fpn_shapes() -> None:
    fpn = FPN([32, 64, 128, 256], 24)
    feats = [torch.randn(2, c, 128 // s, 128 // s) for c, s in zip([32, 64, 128, 256], (4, 8, 16, 32))]
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 24, 32, 32), (2, 24, 16, 16), (2, 24, 8, 8), (2, 24, 4, 4)]


def test_anchors_count_order_and_size() -> None:
    gen = AnchorGenerator(AnchorConfig())
    anchors = gen([(32, 32), (16, 16), (8, 8), (4, 4)], (128, 128), torch.device("cpu"))
    assert [a.shape[0] for a in anchors] == [32 * 32 * 3, 16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3]
    a = anchors[0]
    # first cell centred at (0,0), ratios 0.5,1,2 (h/w) with area 32^2; next cell shifted by stride 4
    wh = torch.stack((a[:3, 2] - a[:3, 0], a[:3, 3] - a[:3, 1]), 1)
    torch.testing.assert_close(wh[:, 0] * wh[:, 1], torch.full((3,), 1024.0))
    torch.testing.assert_close(wh[:, 1] / wh[:, 0], torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(a[3] - a[0], torch.tensor([4.0, 0.0, 4.0, 0.0]))
    assert gen([(32, 32), (16, 16), (8, 8), (4, 4)], (128, 128), torch.device("cpu"))[0] is a  # cached


def test_box_coder_round_trip_and_matching() -> None:
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    ref = torch.tensor([[10.0, 10.0, 50.0, 30.0], [0.0, 0.0, 8.0, 8.0]])
    gt = torch.tensor([[12.0, 8.0, 60.0, 33.0], [1.0, 2.0, 5.0, 9.0]])
    torch.testing.assert_close(coder.decode(coder.encode(gt, ref), ref), gt, atol=1e-4, rtol=0)
    matched, label = match_boxes(gt[:1], torch.cat((gt[:1], ref)), 0.5, 0.5, allow_low_quality=False)
    assert label.tolist() == [1.0, 1.0, 0.0] and matched[0] == 0
    levels = fpn_levels(torch.tensor([[0.0, 0, 10, 10], [0, 0, 224, 224], [0, 0, 1000, 1000]]))
    assert levels.tolist() == [0, 2, 3]  # P2, P4 (canonical 224), P5 (clamped)


def test_jitter_boxes_moves_each_side_within_its_bound() -> None:
    """Copies are box-major; each side moves by at most jitter x the box's width / height."""
    torch.manual_seed(0)
    boxes = torch.tensor([[100.0, 50.0, 200.0, 90.0], [10.0, 10.0, 30.0, 70.0]])
    out = jitter_boxes(boxes, 500, 0.1)
    assert out.shape == (1000, 4)
    for i, box in enumerate(boxes):
        rep = out[i * 500:(i + 1) * 500]
        bound = 0.1 * (box[2:] - box[:2]).repeat(2) + 1e-4
        moved = (rep - box).abs()
        assert bool((moved <= bound).all())
        assert bool((moved.amax(0) > 0.8 * bound).all())  # the whole range is used, not a fraction of it
        assert bool((rep[:, 2:] > rep[:, :2]).all())
    torch.testing.assert_close(jitter_boxes(boxes, 2, 0.0), boxes.repeat_interleave(2, 0))
    with pytest.raises(ValueError, match="copies"):
        jitter_boxes(boxes, 0, 0.1)


def test_jitter_boxes_scales_each_copy_about_its_centre_within_the_range() -> None:
    """gt_scale: each copy keeps its centre and is scaled by one factor (both axes) within
    (lo, hi), spread over the range; (1, 1) draws nothing, so old runs keep their random stream."""
    boxes = torch.tensor([[100.0, 50.0, 200.0, 90.0]])
    torch.manual_seed(0)
    out = jitter_boxes(boxes, 400, 0.0, (0.9, 1.6))
    centre = (out[:, :2] + out[:, 2:]) / 2
    torch.testing.assert_close(centre, torch.tensor([[150.0, 70.0]]).expand(400, 2))
    fw = (out[:, 2] - out[:, 0]) / 100.0
    fh = (out[:, 3] - out[:, 1]) / 40.0
    torch.testing.assert_close(fw, fh)
    assert float(fw.min()) >= 0.9 - 1e-5 and float(fw.max()) <= 1.6 + 1e-5
    assert float(fw.min()) < 0.95 and float(fw.max()) > 1.5  # the whole range is used
    assert 0.3 < float((fw > 1.2).float().mean()) < 0.7  # log-uniform: median sqrt(0.9 x 1.6) = 1.2
    torch.manual_seed(1)
    plain = jitter_boxes(boxes, 8, 0.1)
    torch.manual_seed(1)
    torch.testing.assert_close(jitter_boxes(boxes, 8, 0.1, (1.0, 1.0)), plain)
    with pytest.raises(ValueError, match="scale"):
        jitter_boxes(boxes, 2, 0.1, (1.5, 1.2))


def test_per_image_nms_keeps_groups_apart_and_each_image_to_itself() -> None:
    """One NMS per image, groups (pyramid levels) apart; traced (one ONNX NonMaxSuppression over
    the batch axis) it keeps the same boxes as eagerly, and an image's result does not depend on
    the other images of the batch."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([0, 0, 1, 1])
    batch_boxes = torch.stack((boxes, boxes.flip(0)))  # the second image: the same boxes, reversed
    batch_scores = torch.stack((scores, scores))
    batch_groups = torch.stack((groups, groups.flip(0)))
    eager = per_image_nms(batch_boxes, batch_scores, 0.5, batch_groups, 64)
    assert eager[0].tolist() == pytest.approx([0.9, -1, 0.7, 0.6])  # box 1 suppressed by box 0, same group
    assert eager[1].tolist() == pytest.approx([0.9, 0.8, 0.7, -1])  # image 2: box 3 loses to box 2, same group
    alone = per_image_nms(batch_boxes[1:], batch_scores[1:], 0.5, batch_groups[1:], 64)
    torch.testing.assert_close(alone[0], eager[1])
    traced = torch.jit.trace(lambda b, s, g: per_image_nms(b, s, 0.5, g, 64), (batch_boxes, batch_scores, batch_groups))
    torch.testing.assert_close(traced(batch_boxes, batch_scores, batch_groups), eager)


def _rois(n: int, b: int, size: int = 128) -> torch.Tensor:
    xy = torch.rand(b, n, 2) * size * 0.6
    wh = torch.rand(b, n, 2) * size * 0.35 + 4
    return make_rois(torch.cat((xy, xy + wh), -1))


def test_make_rois_batch_index() -> None:
    rois = make_rois(torch.zeros(2, 3, 4))
    assert rois.shape == (6, 5) and rois[:, 0].tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("kind", ["fusion", "pyramid"])
def test_mask_poolers_shapes(kind: str) -> None:
    pooler = build_mask_pooler(kind, 56, 2)
    low, high = pooler(_pyramid(), _rois(5, 2))
    assert low.shape == (10, 16, 56, 56) and high.shape == (10, 16, 28, 28)
    assert isinstance(pooler, FusionFeaturePooling if kind == "fusion" else PyramidFeaturePooling)


def test_ffp_is_elementwise_max_of_levels() -> None:
    from torchvision.ops import roi_align

    feats, rois = _pyramid(), _rois(3, 2)
    low, high = FusionFeaturePooling(8, 2)(feats, rois)
    r = [roi_align(f, rois, (8 if i < 2 else 4,) * 2, 1 / s, 2, True) for i, (f, s) in enumerate(zip(feats, (4, 8, 16, 32)))]
    torch.testing.assert_close(low, torch.maximum(r[0], r[1]))
    torch.testing.assert_close(high, torch.maximum(r[2], r[3]))


def test_level_select_static_equals_gather() -> None:
    feats, rois = _pyramid(), _rois(20, 2)
    rois[0, 3:] = rois[0, 1:3] + 120  # make sure a large RoI (coarse level) is present
    torch.testing.assert_close(level_select(feats, rois, 7, 2, static=True), level_select(feats, rois, 7, 2, static=False))


def test_traced_level_gather_equals_static_with_empty_levels() -> None:
    """The exported per-level gather (NonZero / Gather / RoiAlign / inverse permutation) gives the
    every-level-plus-Where values, also when some levels get no RoI."""
    from rfnet.model.boxes import fpn_levels
    from rfnet.model.pooling import _gather_levels

    feats, rois = _pyramid(), _rois(12, 2)
    rois[3, 3:] = rois[3, 1:3] + 120  # one coarse RoI; P5 stays empty
    levels = fpn_levels(rois[:, 1:], k_min=2, k_max=5)
    assert (levels == 3).sum() == 0 and len(set(levels.tolist())) >= 2
    torch.testing.assert_close(_gather_levels(feats, rois, levels, 7, 2), level_select(feats, rois, 7, 2, static=True))


def test_mask_head_shape() -> None:
    head = MultiClassMaskHead(16, MaskHeadConfig(channels=8, num_convs=2, num_fused_convs=1))
    out = head(torch.randn(3, 16, 56, 56), torch.randn(3, 16, 28, 28))
    assert out.shape == (3, 2, 56, 56)


def test_pool_image_is_the_image_over_the_roi() -> None:
    """pool_image samples the input at stride 1: a RoI of the image's own size returns it resampled."""
    from rfnet.model.pooling import pool_image

    img = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    rois = torch.tensor([[1.0, 0.0, 0.0, 8.0, 8.0], [0.0, 2.0, 2.0, 6.0, 6.0]])
    out = pool_image(img, rois, 8, 1)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out[0], img[1])  # one sample per pixel centre: the image itself
    # 8 bins over 4 pixels: samples at 1.75, 2.25, ... (half-pixel convention); the image is
    # linear in x and y (64 c + 8 y + x), so bilinear sampling is exact there
    s = 1.75 + 0.5 * torch.arange(8.0)
    expect = 64 * torch.arange(3.0).view(3, 1, 1) + 8 * s.view(1, 8, 1) + s.view(1, 1, 8)
    torch.testing.assert_close(out[1], expect)


def test_rpn_proposals_static_shape() -> None:
    rpn = RegionProposalNetwork(RPNConfig(pre_nms_top_n_test=50, post_nms_top_n_test=40), 16, 3).eval()
    feats = _pyramid()
    anchors = AnchorGenerator(AnchorConfig())([tuple(f.shape[-2:]) for f in feats], (128, 128), torch.device("cpu"))
    props, losses = rpn(feats, anchors, (128, 128))
    assert props.shape == (2, 40, 4) and losses == {}
    assert props.min() >= 0 and props.max() <= 128


def test_rpn_training_losses() -> None:
    rpn = RegionProposalNetwork(RPNConfig(), 16, 3).train()
    feats = _pyramid()
    anchors = AnchorGenerator(AnchorConfig())([tuple(f.shape[-2:]) for f in feats], (128, 128), torch.device("cpu"))
    targets = [{"boxes": torch.tensor([[30.0, 30.0, 70.0, 75.0]])}, {"boxes": torch.zeros((0, 4))}]
    props, losses = rpn(feats, anchors, (128, 128), targets)
    assert props.shape[0] == 2 and not props.requires_grad
    assert set(losses) == {"loss_objectness", "loss_rpn_box"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


@pytest.mark.parametrize("k", [1, 10])
def test_roi_heads_detect_fixed_k_sorted_padded(k: int) -> None:
    heads = RoIHeads(RoIHeadConfig(representation_size=32, detections_per_img=k), 16).eval()
    proposals = _rois(30, 2)[:, 1:].reshape(2, 30, 4)
    proposals[1, :] = proposals[1, :1]  # image 1: all duplicates -> NMS keeps one, rest padded
    boxes, scores = heads.detect(_pyramid(), proposals, (128, 128))
    assert boxes.shape == (2, k, 4) and scores.shape == (2, k)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    assert scores[1, 0] > 0 and torch.all(scores[1, 1:] == 0) and torch.all(boxes[1, 1:] == 0)


def test_roi_heads_pad_when_fewer_proposals_than_k() -> None:
    heads = RoIHeads(RoIHeadConfig(representation_size=32, detections_per_img=10), 16).eval()
    boxes, scores = heads.detect(_pyramid(), _rois(4, 1)[:, 1:].reshape(1, 4, 4), (128, 128))
    assert boxes.shape == (1, 10, 4) and torch.all(scores[0, 4:] == 0)


def test_roi_heads_jittered_gt_mask_rois_index_their_image_and_gt_mask() -> None:
    """train_rois="jittered_gt": the mask RoIs [R,5] carry the image index, gt_index points into
    all images' GT masks in order, whatever the proposals."""
    torch.manual_seed(0)
    mask = MaskHeadConfig(train_rois="jittered_gt", gt_rois_per_image=2, gt_jitter=0.1)
    heads = RoIHeads(RoIHeadConfig(representation_size=32), 16, mask).train()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]])},
               {"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0], [60.0, 60.0, 90.0, 100.0]])}]
    _, pos = heads.loss(_pyramid(), _rois(30, 2)[:, 1:].reshape(2, 30, 4), targets)
    assert pos.rois.shape == (6, 5) and not pos.rois.requires_grad
    assert pos.rois[:, 0].tolist() == [0, 0, 1, 1, 1, 1]
    assert pos.gt_index.tolist() == [0, 0, 1, 1, 2, 2]
    centres = (pos.rois[:, 1:3] + pos.rois[:, 3:]) / 2
    assert float(centres[4:, 0].min()) > 60 and float(centres[:2, 0].max()) < 50


def test_roi_heads_proposal_mask_rois_are_capped_positives() -> None:
    """train_rois="proposals": at most max_positive_rois positives per image, matched to their GT."""
    torch.manual_seed(0)
    heads = RoIHeads(RoIHeadConfig(representation_size=32), 16, MaskHeadConfig(max_positive_rois=3)).train()
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    near = gt + torch.randn(20, 4)  # 20 proposals with IoU >= 0.5 with the disc, plus the GT itself
    _, pos = heads.loss(_pyramid(1), near[None], [{"boxes": gt}])
    assert pos.rois.shape == (3, 5) and pos.gt_index.tolist() == [0, 0, 0]
