"""rfnet.predict goes through the shared core and gives what the plain PyTorch path gives."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rfnet.common.postprocess import postprocess  # noqa: E402
from rfnet.common.preprocess import preprocess_batch  # noqa: E402
from rfnet.predict import predict_dataset, predict_images  # noqa: E402
from tests.support.small_model import blob_image, small_config, spread_heads  # noqa: E402


def _plain_pytorch(model, images, cfg, threshold):
    """The evaluation path written out by hand: preprocess, forward, post-process."""
    batch, lbs = preprocess_batch(images, cfg.input)
    with torch.no_grad():
        out = {k: v.numpy() for k, v in model(torch.from_numpy(batch)).items()}
    return [postprocess(out["boxes"][i], out["scores"][i], out["masks"][i], lb, threshold,
                        mask_box_scale=cfg.mask_head.box_scale) for i, lb in enumerate(lbs)]


@pytest.mark.parametrize("box_scale", [1.0, 1.2])
def test_predict_images_equals_the_plain_pytorch_path(box_scale: float) -> None:
    from rfnet.model import build_model

    cfg = small_config()
    cfg.mask_head.box_scale = box_scale
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    spread_heads(model)
    rng = np.random.default_rng(3)
    images = [blob_image(rng, 160)[:130], blob_image(rng, 150), blob_image(rng, 140)[:, :100]]
    want = _plain_pytorch(model, images, cfg, threshold=0.4)
    got = predict_images(model, images, cfg, torch.device("cpu"), threshold=0.4)
    assert len(got) == 3 and any(w.disc.any() for w in want)
    for g, w in zip(got, want):
        assert np.array_equal(g.disc, w.disc) and np.array_equal(g.cup, w.cup)
        np.testing.assert_array_equal(g.box, w.box)
        assert g.score == w.score and g.cup_fallback == w.cup_fallback

    class _Data:  # the FundusDataset protocol predict_dataset needs
        bad_names: list[str] = []

        def __len__(self) -> int:
            return len(images)

        def get(self, i: int):
            from types import SimpleNamespace
            return SimpleNamespace(image=images[i], name=f"im{i}")

    batched = [seg for _, seg in predict_dataset(model, _Data(), cfg, torch.device("cpu"), batch_size=2,
                                                 threshold=0.4, progress=False)]
    assert [np.array_equal(b.disc, w.disc) and np.array_equal(b.cup, w.cup) for b, w in zip(batched, want)] == [True] * 3
