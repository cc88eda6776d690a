"""Test-time flip: the mirrored view's top detection maps back exactly and is averaged in."""
from __future__ import annotations

import numpy as np

from rfnet.common.tta import merge_mirrored, mirror


def _outputs(box: list[float], score: float, masks: np.ndarray) -> dict[str, np.ndarray]:
    boxes = np.zeros((1, 2, 4), np.float32)
    boxes[0, 0] = box
    scores = np.array([[score, 0.0]], np.float32)
    m = np.zeros((1, 2, 2, 4, 4), np.float32)
    m[0, 0] = masks
    return {"boxes": boxes, "scores": scores, "masks": m}


def test_mirror_flips_width_only() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(mirror(x)[..., 0], x[..., -1])
    assert mirror(x).flags["C_CONTIGUOUS"]


def test_a_perfectly_mirrored_prediction_merges_to_itself() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((2, 4, 4)).astype(np.float32)
    plain = _outputs([10, 20, 30, 44], 0.9, masks)
    # what a mirror-equivariant model predicts on the mirrored 64-wide input
    mirrored = _outputs([64 - 30, 20, 64 - 10, 44], 0.9, masks[..., ::-1])
    out, merged = merge_mirrored(plain, mirrored, 64)
    assert merged.tolist() == [True]
    np.testing.assert_allclose(out["boxes"], plain["boxes"])
    np.testing.assert_allclose(out["masks"], plain["masks"], atol=1e-7)


def test_averages_overlapping_views_and_keeps_disagreeing_ones() -> None:
    a = _outputs([10, 20, 30, 40], 0.8, np.ones((2, 4, 4), np.float32))
    b = _outputs([64 - 32, 20, 64 - 12, 40], 0.6, np.zeros((2, 4, 4), np.float32))
    out, merged = merge_mirrored(a, b, 64)
    assert merged.tolist() == [True]
    np.testing.assert_allclose(out["boxes"][0, 0], [11, 20, 31, 40])
    assert np.isclose(out["scores"][0, 0], 0.7) and np.allclose(out["masks"][0, 0], 0.5)
    assert out["scores"][0, 1] == 0.0  # other slots untouched
    far = _outputs([0, 0, 8, 8], 0.9, np.zeros((2, 4, 4), np.float32))  # another place: no merge
    out, merged = merge_mirrored(a, far, 64)
    assert merged.tolist() == [False] and np.array_equal(out["boxes"], a["boxes"])
    none = _outputs([0, 0, 0, 0], 0.0, np.zeros((2, 4, 4), np.float32))
    assert merge_mirrored(a, none, 64)[1].tolist() == [False]
