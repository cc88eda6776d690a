"""A small RF-Net (light preset, 128-px input, untrained but tie-free) for parity tests.

The model is the ``light`` preset at a 128-pixel input with untrained, seeded weights. Its
heads are re-initialised with a wider spread (``spread_heads``) so that scores are distinct
and masks are not all ~0.5: with the default initialisation (std 0.01 logits) sigmoid
scores collapse onto a few float32 values and the ranking between backends is decided by
ties, which would make any parity check meaningless. ``post_nms_top_n_test`` is lowered
so every proposal reaching the box head has survived NMS, and the RPN's NMS threshold is 1.0:
an untrained RPN still produces exactly tied objectness scores among overlapping anchors
(measured: several per image), and which of two tied boxes NMS keeps is an arbitrary choice
that PyTorch and ONNX Runtime make differently. The RoI head's NMS (0.5) stays, on
well-separated scores. With these settings and seeds, parity was verified at static batch
1 and 2 and dynamic batch 1 and 2 (masks <= 5e-7). A trained checkpoint needs none of this.

Parity images (``parity_dir``) are smooth random blobs: an untrained backbone maps large
uniform areas (the black corners of a fundus photograph) or fine noise to near-identical
features, whose exactly tied objectness scores then decide the proposals; blobs give
position-dependent features at every pyramid level.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SIZE = 128


def spread_heads(model: Any, seed: int = 0) -> None:
    """Deterministically re-initialise the heads so that detections have distinct scores."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None:
                mod.bias.uniform_(0.0, 0.2, generator=g)
        for mod in (model.rpn.head.cls_logits, model.roi_heads.head.cls_score):
            mod.weight.normal_(0.0, 1.0, generator=g)
            mod.bias.normal_(0.0, 1.0, generator=g)
        torch.nn.init.kaiming_normal_(model.rpn.head.conv.weight, generator=g)
        model.mask_head.predictor.weight.normal_(0.0, 0.1, generator=g)


def small_config() -> Any:
    from rfnet.config import get_preset

    cfg = get_preset("light")
    cfg.input.size = SIZE
    cfg.rpn.post_nms_top_n_test = 64
    cfg.rpn.nms_thresh = 1.0
    return cfg


def blob_image(rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """uint8 [size,size,3] RGB image of random coloured Gaussian blobs plus light noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    for _ in range(12):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(8, 40)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(-1, 1, 3)
    img += rng.normal(0, 0.05, img.shape)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def save_small_checkpoint(path: Any, seed: int = 0) -> tuple[Any, Any]:
    """Build the small eval model (seeded, heads spread), save it to ``path``: (model, cfg)."""
    import torch

    from rfnet.checkpoint import save_checkpoint
    from rfnet.model import build_model

    cfg = small_config()
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    spread_heads(model, seed)
    save_checkpoint(path, model, cfg)
    return model, cfg
