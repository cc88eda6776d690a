"""The U-Net mask branch (rfnet/model/unet_head.py, ``mask_head.branch = "unet"``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rfnet.config import MaskHeadConfig, ModelConfig
from rfnet.model import build_model
from rfnet.model.unet_head import PolarUNetMaskHead, UNetMaskHead, build_unet_head


def _head(**kw: object) -> UNetMaskHead:
    cfg = MaskHeadConfig(branch="unet", mask_size=32, unet_channels=4, unet_depth=3, **kw)  # type: ignore[arg-type]
    return build_unet_head(16, cfg).eval()


def test_shapes_and_inputs_that_change_the_logits() -> None:
    """image [R,3,S,S], low [R,C,S/2,S/2], high [R,C,S/4,S/4] -> [R,2,S,S]; each input matters."""
    torch.manual_seed(0)
    head = _head()
    low, high, image = torch.randn(3, 16, 16, 16), torch.randn(3, 16, 8, 8), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = head(low, high, image)
        assert out.shape == (3, 2, 32, 32)
        for changed in ((low, high, image.flip(-1)), (low.flip(-1), high, image), (low, high.flip(-1), image)):
            assert (head(*changed) - out).abs().max() > 1e-6
        # RoIs are independent in eval mode (BatchNorm uses its running statistics)
        torch.testing.assert_close(head(low[:1], high[:1], image[:1]), out[:1], rtol=1e-5, atol=1e-6)


def test_image_required_and_sizes_checked() -> None:
    head = _head()
    with pytest.raises(ValueError, match="pooled image"):
        head(torch.randn(1, 16, 16, 16), torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* unet_depth"):
        UNetMaskHead(16, MaskHeadConfig(branch="unet", mask_size=56, unet_depth=4))
    with pytest.raises(ValueError, match="unet_depth"):
        UNetMaskHead(16, MaskHeadConfig(branch="unet", mask_size=32, unet_depth=1))


def test_rfnet_with_the_unet_branch_trains_and_keeps_the_output_contract(light_cfg: ModelConfig, fundus) -> None:
    """The branch gets gradients from the mask loss, through its image and pyramid inputs, and
    the eval outputs are [B,K,2,M,M] at M = mask_size."""
    torch.manual_seed(0)
    light_cfg.mask_head.branch = "unet"
    light_cfg.mask_head.mask_size = 32
    light_cfg.mask_head.unet_channels = 4
    light_cfg.mask_head.unet_depth = 3
    model = build_model(light_cfg).train()
    x, t = fundus(128, np.random.default_rng(0))
    losses = model(x[None], [t])
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    losses["loss_mask"].backward()
    assert model.mask_head.encoder[0][0].weight.grad.abs().sum() > 0
    assert model.mask_head.reduce_low[0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0  # through the pooled pyramid
    with torch.no_grad():
        out = model.eval()(x[None])
    assert out["masks"].shape == (1, light_cfg.roi_heads.detections_per_img, 2, 32, 32)
    assert float(out["masks"].min()) >= 0.0 and float(out["masks"].max()) <= 1.0


def test_unknown_branch_is_refused(light_cfg: ModelConfig) -> None:
    light_cfg.mask_head.branch = "cascade"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="mask_head.branch"):
        build_model(light_cfg)


def test_image_only_unet_has_no_pyramid_inputs() -> None:
    """``unet_pyramid=False``: no reduce layers, the pyramid arguments are ignored."""
    torch.manual_seed(0)
    head = _head(unet_pyramid=False)
    assert not head.uses_pyramid and not hasattr(head, "reduce_low")
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = head(None, None, image)
        assert out.shape == (2, 2, 32, 32)
        torch.testing.assert_close(head(torch.randn(2, 16, 16, 16), torch.randn(2, 16, 8, 8), image), out)
    with pytest.raises(ValueError, match="pooled pyramid"):
        _head()(None, None, image)


def _image_only_jittered_cfg(cfg: ModelConfig) -> ModelConfig:
    cfg.mask_head.branch = "unet"
    cfg.mask_head.mask_size = 32
    cfg.mask_head.unet_channels = 4
    cfg.mask_head.unet_depth = 3
    cfg.mask_head.unet_pyramid = False
    cfg.mask_head.train_rois = "jittered_gt"
    cfg.mask_head.gt_rois_per_image = 3
    return cfg


def test_image_only_unet_on_jittered_gt_boxes_trains_apart_from_the_backbone(light_cfg: ModelConfig, fundus) -> None:
    """The mask loss trains the branch on gt_rois_per_image jittered GT boxes per image and
    sends no gradient into the backbone; the eval outputs keep the contract."""
    torch.manual_seed(0)
    model = build_model(_image_only_jittered_cfg(light_cfg)).train()
    seen: list[int] = []
    model.mask_head.register_forward_hook(lambda _m, args, _out: seen.append(int(args[2].shape[0])))
    (x0, t0), (x1, t1) = fundus(128, np.random.default_rng(0)), fundus(128, np.random.default_rng(1))
    losses = model(torch.stack((x0, x1)), [t0, t1])
    assert seen == [2 * 3]  # 3 copies of one disc box in each of 2 images, whatever the proposals
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    losses["loss_mask"].backward()
    assert model.mask_head.encoder[0][0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad is None  # the image-only branch never reads the pyramid
    with torch.no_grad():
        out = model.eval()(x0[None])
    assert out["masks"].shape == (1, light_cfg.roi_heads.detections_per_img, 2, 32, 32)


def test_unknown_train_rois_is_refused(light_cfg: ModelConfig) -> None:
    light_cfg.mask_head.train_rois = "detections"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="train_rois"):
        build_model(light_cfg)  # refused when built, not at the first training step


def _disc_image(size: int, radius: float, centre: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """[1,1,S,S]: 1 inside a circle of ``radius`` (in half-sides) about ``centre`` (x, y), else 0."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    return (((x - centre[0]) ** 2 + (y - centre[1]) ** 2) < radius ** 2).float()[None, None]


def test_polar_grids_put_radius_on_rows_and_angle_on_columns() -> None:
    """A centred disc of radius 0.5 becomes the top half of the polar image at every angle, and a
    disc off to +x (angle 0) reaches further out in the first and last columns than at angle pi."""
    from rfnet.model.unet_head import _resample, polar_grids

    size = 64
    to_polar, _ = polar_grids(size)
    assert to_polar.shape == (1, size, size, 2)
    polar = _resample(_disc_image(size, 0.5), to_polar)[0, 0]
    assert bool((polar[: size // 2 - 2] > 0.99).all()) and bool((polar[size // 2 + 2:] < 0.01).all())
    shifted = _resample(_disc_image(size, 0.4, (0.3, 0.0)), to_polar)[0, 0]
    extent = (shifted > 0.5).sum(dim=0)  # rows inside the disc, per angle column
    assert extent[0] > extent[size // 2] + size // 4 and abs(int(extent[0]) - int(extent[-1])) <= 1


def test_polar_round_trip_restores_the_roi_inside_its_inscribed_circle() -> None:
    """to_polar then (wrapped) to_cartesian gives the RoI image back where the polar grid covers it,
    the angle seam included; the corners clamp to the outermost ring."""
    from rfnet.model.unet_head import _resample, polar_grids, wrap_columns

    size = 64
    to_polar, to_cartesian = polar_grids(size)
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    smooth = (torch.exp(-((x - 0.1) ** 2 + (y + 0.05) ** 2) / 0.2) + 0.3 * torch.sin(3 * x))[None, None]
    back = _resample(wrap_columns(_resample(smooth, to_polar), 1), to_cartesian)
    inside = (x ** 2 + y ** 2) < 0.9 ** 2
    assert float((back - smooth)[0, 0][inside].abs().max()) < 0.01
    seam = inside & (y.abs() < 0.1) & (x > 0.2)  # angle near 0 / 2 pi: the wrapped columns
    assert float((back - smooth)[0, 0][seam].abs().max()) < 0.01


def test_polar_unet_keeps_the_branch_contract_and_refuses_the_pyramid() -> None:
    torch.manual_seed(0)
    head = _head(unet_pyramid=False, unet_polar=True)
    assert isinstance(head, PolarUNetMaskHead) and "to_polar" not in head.state_dict()  # constants, rebuilt
    # the polar head is the Cartesian image-only U-Net's parameters: checkpoints of either load
    cartesian = _head(unet_pyramid=False)
    assert type(cartesian) is UNetMaskHead and list(cartesian.state_dict()) == list(head.state_dict())
    image = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = head(None, None, image)
        assert out.shape == (3, 2, 32, 32)
        assert (head(None, None, image.flip(-1)) - out).abs().max() > 1e-6
        torch.testing.assert_close(head(None, None, image[:1]), out[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unet_polar needs unet_pyramid=false"):
        _head(unet_polar=True)
    with pytest.raises(ValueError, match="unet_polar_circular needs unet_polar=true"):
        _head(unet_pyramid=False, unet_polar_circular=True)


def test_polar_unet_trains_through_both_resamplings(light_cfg: ModelConfig, fundus) -> None:
    """The mask loss (on the Cartesian grid, as always) reaches the polar U-Net's first layer."""
    torch.manual_seed(0)
    cfg = _image_only_jittered_cfg(light_cfg)
    cfg.mask_head.unet_polar = True
    model = build_model(cfg).train()
    x, t = fundus(128, np.random.default_rng(0))
    losses = model(x[None], [t])
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    losses["loss_mask"].backward()
    assert model.mask_head.encoder[0][0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = model.eval()(x[None])
    assert out["masks"].shape == (1, cfg.roi_heads.detections_per_img, 2, 32, 32)


def test_circular_padding_makes_the_polar_unet_shift_equivariant() -> None:
    """With ``unet_polar_circular`` no level of the U-Net sees an edge at angle 0: rotating the polar
    image by a multiple of 2 ** depth columns rotates its logits by as much (no seam anywhere).
    The same weights with zero padding do not."""
    torch.manual_seed(0)
    kw = dict(branch="unet", mask_size=32, unet_channels=4, unet_depth=3, unet_pyramid=False, unet_polar=True)
    circular = PolarUNetMaskHead(16, MaskHeadConfig(unet_polar_circular=True, **kw)).eval()  # type: ignore[arg-type]
    others = [PolarUNetMaskHead(16, MaskHeadConfig(**kw)).eval()]  # type: ignore[arg-type]
    with torch.no_grad():
        circular.predictor.weight.normal_(0.0, 0.5)
        for other in others:  # same parameters and state-dict keys: only the padding differs
            other.load_state_dict(circular.state_dict())
        polar = torch.randn(2, 3, 32, 32)
        for shift in (8, 16):
            rolled = torch.roll(polar, shift, dims=-1)
            torch.testing.assert_close(circular.polar_logits(rolled),
                                       torch.roll(circular.polar_logits(polar), shift, dims=-1), rtol=1e-4, atol=1e-5)
            for other in others:
                gap = other.polar_logits(rolled) - torch.roll(other.polar_logits(polar), shift, dims=-1)
                assert float(gap.abs().max()) > 1e-3
        out = circular(None, None, torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 2, 32, 32) and torch.isfinite(out).all()
