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

    batched = [r.segmentation for _, r in predict_dataset(model, _Data(), cfg, torch.device("cpu"), batch_size=2,
                                                 threshold=0.4, progress=False)]
    assert [np.array_equal(b.disc, w.disc) and np.array_equal(b.cup, w.cup) for b, w in zip(batched, want)] == [True] * 3


class _Scripted(torch.nn.Module):
    """Eval outputs of the contract with one confident centred detection per image (the
    scripted backend's, tests/support/fake_backend.py): what the verdict then depends on is the image."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.s, self.k, self.m = cfg.input.size, cfg.roi_heads.detections_per_img, cfg.mask_head.mask_size

    def forward(self, x):
        from tests.support.fake_backend import round_masks

        b, s = x.shape[0], self.s
        boxes = torch.zeros(b, self.k, 4)
        boxes[:, 0] = torch.tensor([s * 3 / 8, s * 3 / 8, s * 5 / 8, s * 5 / 8])
        scores = torch.zeros(b, self.k)
        scores[:, 0] = 0.9
        masks = torch.zeros(b, self.k, 2, self.m, self.m)
        masks[:, 0] = torch.nn.functional.interpolate(torch.from_numpy(round_masks())[None], size=(self.m, self.m))[0]
        return {"boxes": boxes, "scores": scores, "masks": masks}


def test_evaluate_dataset_leaves_cdrs_of_ungradable_images_out() -> None:
    from types import SimpleNamespace

    from rfnet.data.synthetic import generate_sample
    from rfnet.predict import CDR_PRED_COLUMNS, evaluate_dataset

    cfg = small_config()
    good, disc, cup = generate_sample(np.random.default_rng(1), 320)
    small, sdisc, scup = generate_sample(np.random.default_rng(2), 120)
    samples = [SimpleNamespace(name="good", image=good, disc=disc, cup=cup, meta={}),
               SimpleNamespace(name="black", image=np.zeros_like(good), disc=disc, cup=cup, meta={}),
               SimpleNamespace(name="small", image=small, disc=sdisc, cup=scup, meta={})]

    class _Data:
        bad_names: list[str] = []

        def __len__(self) -> int:
            return len(samples)

        def get(self, i: int):
            return samples[i]

    result = evaluate_dataset(_Scripted(cfg).eval(), _Data(), cfg, torch.device("cpu"), batch_size=2, progress=False)
    rows = {r["name"]: r for r in result.rows}
    assert [(r["gradable"], r["reason"]) for r in result.rows] == [
        (1, ""), (0, "image_too_dark"), (0, "image_too_small")]
    assert all(rows["good"][c] is not None for c in CDR_PRED_COLUMNS)
    assert all(rows[n][c] is None for n in ("black", "small") for c in CDR_PRED_COLUMNS)
    assert rows["black"]["vcdr_gt"] is not None  # the ground truth is still known
    assert result.n_gradable == 1 and result.gradable_rate == pytest.approx(1 / 3)
    assert result.reasons == {"image_too_dark": 1, "image_too_small": 1}
    # Dice over every image, CDR errors over the gradable one; the gradable summary is that image alone
    assert result.mean("dice_disc") == pytest.approx(np.mean([r["dice_disc"] for r in result.rows]))
    assert result.mean("vcdr_ae") == pytest.approx(rows["good"]["vcdr_ae"])
    assert result.gradable_summary["dice_disc"][0] == pytest.approx(rows["good"]["dice_disc"])
    # a higher minimum disc score makes the good image ungradable as well
    strict = evaluate_dataset(_Scripted(cfg).eval(), _Data(), cfg, torch.device("cpu"), progress=False, min_score=0.95)
    assert strict.n_gradable == 0 and strict.reasons["low_disc_score"] == 1
