"""The image -> segmentation core (rfnet.common.segment) with a numpy stand-in backend."""
from __future__ import annotations

import numpy as np
import pytest

from rfnet.common.backend import Backend, ModelLoadError, TensorSpec
from rfnet.common.contract import ContractError, ModelMetadata
from rfnet.common.imageio import Photo
from rfnet.common.segment import STAGES, Segmenter, model_info

S, K, M = 64, 2, 16
F32 = np.dtype(np.float32)


class FakeBackend(Backend):
    """Slot 0: a box centred in the input, half-size 10 + 10 * max(image); a round disc and cup mask.

    Records the batch size of every call, so the tests see the core's chunking and padding.
    """

    name = "fake"

    def __init__(self, *, batch: int = -1, k_out: int = K, mask_box_scale: float = 1.0, declared_k: int = K,
                 crop_margin: float = 1.0) -> None:
        super().__init__("fake.onnx")
        self.batch, self.k_out, self.scale, self.declared_k = batch, k_out, mask_box_scale, declared_k
        self.crop_margin = crop_margin
        self.calls: list[int] = []

    def _has_source(self) -> bool:
        return True

    def _load(self) -> None:
        k = self.declared_k
        self.inputs = [TensorSpec("image", F32, (self.batch, 3, S, S))]
        self.outputs = [TensorSpec("boxes", F32, (self.batch, k, 4)), TensorSpec("scores", F32, (self.batch, k)),
                        TensorSpec("masks", F32, (self.batch, k, 2, M, M))]
        self.metadata = ModelMetadata(preset="test", input_size=S, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0),
                                      mask_size=M, top_k=K, class_names=("disc", "cup"), precision="fp32",
                                      mask_box_scale=self.scale, crop_margin=self.crop_margin).to_strings()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["image"]
        b = x.shape[0]
        self.calls.append(b)
        r = 10.0 + 10.0 * x.reshape(b, -1).max(axis=1)
        boxes = np.zeros((b, self.k_out, 4), np.float32)
        boxes[:, 0] = np.stack([S / 2 - r, S / 2 - r, S / 2 + r, S / 2 + r], axis=1)
        scores = np.zeros((b, self.k_out), np.float32)
        scores[:, 0] = 0.9
        yy, xx = np.mgrid[0:M, 0:M] + 0.5
        d = np.hypot(xx - M / 2, yy - M / 2)
        masks = np.zeros((b, self.k_out, 2, M, M), np.float32)
        masks[:, 0, 0] = (d < 0.45 * M) * 0.9
        masks[:, 0, 1] = (d < 0.2 * M) * 0.9
        return {"boxes": boxes, "scores": scores, "masks": masks}

    def _close(self) -> None:
        pass


def _images(values: list[int]) -> list[np.ndarray]:
    return [np.full((40 + 10 * i, 50, 3), v, np.uint8) for i, v in enumerate(values)]


@pytest.mark.parametrize(("batch", "requested", "calls"), [(-1, 2, [2, 2, 1]), (2, 1, [2, 2, 2]), (-1, 8, [5])])
def test_chunks_and_pads_to_the_models_batch(batch: int, requested: int, calls: list[int]) -> None:
    values = [0, 255, 128, 64, 200]
    with FakeBackend(batch=batch) as b:
        core = Segmenter(b, batch_size=requested)
        results = core.process_batch(_images(values))
    assert b.calls == calls  # a fixed batch of 2: the 5th image is padded to a pair
    assert len(results) == 5
    for r, v, im in zip(results, values, _images(values)):
        assert set(r.timings) == set(STAGES) and all(t >= 0 for t in r.timings.values())
        assert r.segmentation.disc.shape == im.shape[:2] and r.segmentation.found
        # results stay in input order: the box size follows each image's own brightness
        half = (r.segmentation.box[2] - r.segmentation.box[0]) / 2
        lb_scale = S / max(im.shape[:2])
        assert half == pytest.approx(min((10 + 10 * v / 255) / lb_scale, im.shape[1] / 2), rel=1e-4)
        # 40-80 x 50 px uniform images: never gradable, so no CDR leaves the core
        assert not r.gradable and r.grade.reason == "image_too_small" and r.cdr is None


def test_mask_box_scale_comes_from_the_metadata() -> None:
    image = _images([128])
    areas = {}
    for scale in (1.0, 1.5):
        with FakeBackend(mask_box_scale=scale) as b:
            core = Segmenter(b)
            assert core.info.mask_box_scale == scale
            areas[scale] = int(core.segment(image)[0].disc.sum())
    assert areas[1.5] / areas[1.0] == pytest.approx(2.25, rel=0.1)


def test_outputs_that_break_the_contract() -> None:
    with FakeBackend(k_out=3, declared_k=-1) as b:  # K not declared: caught on the first call
        core = Segmenter(b)
        with pytest.raises(ContractError, match=r"fake.onnx: output boxes has shape \[1, 3, 4\], expected \[1, 2, 4\]"):
            core.process_batch(_images([0]))
    with FakeBackend(declared_k=5) as b, pytest.raises(ModelLoadError, match="metadata says top_k 2"):
        model_info(b)


def test_threshold_is_checked() -> None:
    with FakeBackend() as b, pytest.raises(ValueError, match="threshold"):
        Segmenter(b, threshold=1.0)


@pytest.mark.parametrize("margin", [1.0, 1.5])
def test_crop_margin_letterboxes_disc_centred_crops_only(margin: float) -> None:
    """rfnet.crop_margin: an image without a fundus field's edge (no dark corners: a crop) fills
    1 / margin of the input; a round field on black (four dark corners) fills it as usual. The fake
    box is 20 input px from the centre, so its size in the photograph shows the letterbox's scale."""
    crop = np.full((200, 200, 3), 255, np.uint8)
    yy, xx = np.mgrid[0:200, 0:200]
    whole = np.where((np.hypot(xx - 99.5, yy - 99.5) < 95)[..., None], crop, 0).astype(np.uint8)
    with FakeBackend(crop_margin=margin) as b:
        core = Segmenter(b)
        assert core.info.crop_margin == margin
        got = core.process_batch([crop, whole])
        photo = core.prepare(Photo(crop, 200, 200))
    assert [r.quality.field_edge for r in got] == [False, True]
    half = [(r.segmentation.box[2] - r.segmentation.box[0]) / 2 for r in got]
    assert half[0] == pytest.approx(20 * margin * 200 / S, rel=1e-5)
    assert half[1] == pytest.approx(20 * 200 / S, rel=1e-5)
    assert photo[1].scale == pytest.approx(S / (margin * 200)) and not photo[2].field_edge
