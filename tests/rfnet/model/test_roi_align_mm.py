"""The matrix-product RoIAlign used for CPU training equals torchvision's, values and gradients."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from rfnet.model.pooling import _pool
from rfnet.model.roi_align_mm import roi_align_mm


@pytest.mark.parametrize("size,scale,sr", [(14, 0.25, 2), (7, 0.125, 2), (6, 0.5, 3)])
def test_values_and_gradients_match_torchvision(size: int, scale: float, sr: int) -> None:
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 20, 23, dtype=torch.float64, generator=g, requires_grad=True)
    n = 12
    xy0 = torch.rand(n, 2, dtype=torch.float64, generator=g) * 23 / scale - 10  # some RoIs cross the border
    wh = torch.rand(n, 2, dtype=torch.float64, generator=g) * 40 + 0.5
    rois = torch.cat([torch.arange(n).remainder(2).double()[:, None], xy0, xy0 + wh], 1)
    rois[0, 1:] = torch.tensor([-30.0, -30.0, -20.0, -20.0])  # entirely outside: zeros
    ref = roi_align(feat, rois, (size, size), spatial_scale=scale, sampling_ratio=sr, aligned=True)
    got = roi_align_mm(feat, rois, size, scale, sr)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    w = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), feat)
    (g_got,) = torch.autograd.grad((got * w).sum(), feat)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-10)
    assert float(got[0].abs().max()) == 0.0


def test_used_for_cpu_training_only_and_float32_under_bf16_autocast() -> None:
    feat = torch.randn(1, 4, 16, 16, requires_grad=True)
    rois = torch.tensor([[0.0, 4.0, 4.0, 40.0, 30.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _pool(feat.to(torch.bfloat16), rois, 8, 4, 2)
    assert out.dtype == torch.float32
    ref = roi_align(feat.detach(), rois, (8, 8), spatial_scale=0.25, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.02)  # bf16 features, float32 pooling
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_mm(feat, rois, 8, 0.25, 0)
