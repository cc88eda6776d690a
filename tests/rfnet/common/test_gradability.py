"""Gradability (rfnet.common.gradability): real-world junk and bad detections are not graded.

Verdicts that depend on the image alone, or on what the model outputs, are checked here with
a scripted backend (tests/support/fake_backend.py); no trained model is needed for them.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from rfnet.common import gradability as G
from rfnet.common.postprocess import Segmentation
from rfnet.common.preprocess import Letterbox
from rfnet.common.segment import Segmenter
from rfnet.config import DEFAULT_MIN_DISC_SCORE
from rfnet.data.junk import JUNK_NAMES, cut_disc_fundus, junk_images
from rfnet.data.synthetic import generate_sample
from tests.support.fake_backend import S, ScriptedBackend, round_masks

#: The verdict each generated junk image must get (from the image alone).
JUNK_VERDICTS = {
    "black": G.IMAGE_TOO_DARK,
    "white": G.IMAGE_TOO_FLAT,
    "grey": G.IMAGE_TOO_FLAT,
    "noise": G.IMAGE_TOO_FLAT,
    "scene": G.NOT_FUNDUS_COLOUR,
    "tiny": G.IMAGE_TOO_SMALL,
    "strip": G.IMAGE_TOO_SMALL,
}


def _box(mask: np.ndarray) -> np.ndarray:
    """xyxy (pixel edges) of a bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)


def _true_box_script(discs: list[np.ndarray]):
    """A script answering call i with the true disc box of image i (mapped into the input)."""
    it = iter(discs)

    def script(_x: np.ndarray) -> tuple[np.ndarray, float]:
        disc = next(it)
        lb = Letterbox.compute(disc.shape[0], disc.shape[1], S)
        return lb.boxes_to_input(_box(disc)[None])[0], 0.9
    return script


def test_every_junk_image_has_its_verdict_from_the_image_alone() -> None:
    images = junk_images(seed=0)
    assert set(images) == set(JUNK_NAMES) == set(JUNK_VERDICTS)
    for name, image in images.items():
        verdict = G.grade_image(G.measure_image(image))
        assert (verdict.gradable, verdict.reason) == (False, JUNK_VERDICTS[name]), (name, verdict)
        assert verdict.message


@pytest.mark.parametrize("seed", range(4))
def test_generated_fundus_images_pass_the_image_checks(seed: int) -> None:
    image, _, _ = generate_sample(np.random.default_rng(seed), 384)
    assert G.grade_image(G.measure_image(image)) == G.GRADABLE
    grey = np.repeat(image.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)  # red-free photography
    verdict = G.grade_image(G.measure_image(grey))  # the models read colour photographs only: refused, with a reason
    assert (verdict.gradable, verdict.reason) == (False, G.NO_COLOUR) and "grey-scale" in verdict.message


def test_image_measures_scale_and_thresholds() -> None:
    image, _, _ = generate_sample(np.random.default_rng(0), 512)
    q = G.measure_image(image)
    assert (q.height, q.width) == (512, 512) and q.brightness > 2 * G.MIN_BRIGHTNESS
    assert q.contrast > 2 * G.MIN_CONTRAST and q.red_fraction > 0.9
    dim = (image * 0.1).astype(np.uint8)  # a tenth of the light: its brightest 1 % under 40
    assert G.grade_image(G.measure_image(dim)).reason == G.IMAGE_TOO_DARK
    assert G.grade_image(G.measure_image(image[:255])).reason == G.IMAGE_TOO_SMALL
    with pytest.raises(ValueError, match="RGB"):
        G.measure_image(np.zeros((10, 10), np.uint8))


def _seg(h: int = 400, w: int = 400, box=(150, 150, 250, 250), score: float = 0.9, cup: bool = True) -> Segmentation:
    disc = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    disc[y0 + 5:y1 - 5, x0 + 5:x1 - 5] = True
    cup_mask = np.zeros_like(disc)
    if cup:
        cup_mask[y0 + 30:y1 - 30, x0 + 30:x1 - 30] = True
    return Segmentation(disc, cup_mask, np.array(box, np.float32), score)


@pytest.mark.parametrize(("seg", "reason"), [
    (_seg(), ""),
    (Segmentation(np.zeros((400, 400), bool), np.zeros((400, 400), bool), np.zeros(4, np.float32), 0.0), G.NO_DISC),
    (_seg(score=0.2), G.LOW_DISC_SCORE),
    (_seg(box=(300, 150, 400, 250)), G.DISC_AT_EDGE),  # box at the right border
    (_seg(box=(0, 150, 100, 250)), G.DISC_AT_EDGE),
    (_seg(box=(195, 195, 215, 215)), G.DISC_TOO_SMALL),  # 10 px of disc
    (_seg(box=(20, 20, 380, 380)), G.DISC_TOO_LARGE),  # 350 px of a 400 px image
    (_seg(cup=False), G.NO_CUP),
])
def test_detection_checks(seg: Segmentation, reason: str) -> None:
    verdict = G.grade_detection(seg, min_disc_score=0.5)
    assert (verdict.gradable, verdict.reason) == (not reason, reason)
    assert bool(verdict.message) == bool(reason)


def test_the_core_grades_junk_and_reports_no_cdr_for_it() -> None:
    images = junk_images(seed=1)
    with ScriptedBackend() as backend:  # a confident centred "disc" in every image
        results = Segmenter(backend).process_batch(list(images.values()))
    for name, r in zip(images, results):
        assert r.segmentation.found and r.segmentation.score == pytest.approx(0.9)
        assert (r.gradable, r.grade.reason, r.cdr) == (False, JUNK_VERDICTS[name], None), name


def test_the_core_grades_a_fundus_and_refuses_one_whose_disc_the_edge_cuts() -> None:
    whole, disc, _ = generate_sample(np.random.default_rng(7), 512)
    cut, cut_disc, _ = cut_disc_fundus(seed=7)
    assert cut_disc[:, -1].any(), "the crop goes through the disc"
    with ScriptedBackend(_true_box_script([disc, cut_disc])) as backend:
        good, edge = Segmenter(backend).process_batch([whole, cut])
    assert good.gradable and good.grade.reason == "" and good.cdr is not None
    assert 0.4 < good.cdr["vcdr"] < 0.6  # the scripted cup is half the scripted disc
    assert (edge.gradable, edge.grade.reason, edge.cdr) == (False, G.DISC_AT_EDGE, None)


@pytest.mark.parametrize(("meta_min", "override", "gradable"), [
    (0.95, None, False),  # the model's rfnet.min_disc_score is above the detection's 0.9
    (0.95, 0.5, True),  # --min-score overrides it
    (None, None, True),  # an older model: the documented default
])
def test_min_disc_score_comes_from_the_model_and_can_be_overridden(meta_min, override, gradable) -> None:
    image, disc, _ = generate_sample(np.random.default_rng(3), 400)
    with ScriptedBackend(_true_box_script([disc]), min_disc_score=meta_min) as backend:
        core = Segmenter(backend, min_score=override)
        assert core.min_score == (override if override is not None else meta_min or DEFAULT_MIN_DISC_SCORE)
        (r,) = core.process_batch([image])
    assert r.gradable is gradable and r.grade.reason == ("" if gradable else G.LOW_DISC_SCORE)


def test_min_score_is_checked() -> None:
    with ScriptedBackend() as backend, pytest.raises(ValueError, match="min_score must be in"):
        Segmenter(backend, min_score=1.5)


def test_a_missing_cup_is_not_graded() -> None:
    image, disc, _ = generate_sample(np.random.default_rng(4), 400)
    no_cup = round_masks()
    no_cup[1] = 0.0  # the cup map stays at 0: no fallback either
    with ScriptedBackend(_true_box_script([disc]), masks=no_cup) as backend:
        (r,) = Segmenter(backend).process_batch([image])
    assert (r.gradable, r.grade.reason) == (False, G.NO_CUP) and r.segmentation.disc.any()


def test_field_and_brightness_measures_and_the_models_limits() -> None:
    """A generated fundus shows its field's edge; its true disc spans a plausible part of the field
    and is brighter than its ring. A model's rfnet.grading_limits decide: a field-ratio window that
    excludes it refuses it (disc_size_for_field), so does a contrast it does not reach
    (disc_not_bright); without limits (older models) neither check applies."""
    image, disc, _ = generate_sample(np.random.default_rng(5), 512)
    q = G.measure_image(image)
    assert q.field_edge and 0.7 * 512 < q.field_px <= 512 and q.saturation > G.MIN_SATURATION
    verdicts = {}
    for name, limits in (("none", None), ("field", {"max_disc_field_ratio": 0.05}),
                         ("bright", {"min_disc_contrast": 50.0}), ("wide", {"max_disc_field_ratio": 0.9})):
        meta = {} if limits is None else {"rfnet.grading_limits": json.dumps(limits)}
        with ScriptedBackend(_true_box_script([disc]), metadata=meta) as backend:
            (r,) = Segmenter(backend).process_batch([image])
        verdicts[name] = r
    m = verdicts["none"].grade.measures
    assert 0.05 < m["disc_field_ratio"] < 0.5 and m["disc_contrast"] > 1.0 and 0 <= m["disc_uncertainty"] < 0.5
    assert verdicts["none"].gradable and verdicts["wide"].gradable
    assert verdicts["field"].grade.reason == G.DISC_SIZE_FOR_FIELD and verdicts["field"].cdr is None
    assert verdicts["bright"].grade.reason == G.DISC_NOT_BRIGHT and "optic nerve head" in verdicts["bright"].grade.message
    # a crop inside the field (no dark corners) has no field ratio: only the short-side bounds apply
    crop = image[128:384, 128:384]
    qc = G.measure_image(np.ascontiguousarray(crop))
    assert not qc.field_edge and qc.field_px == 256
    # half of the field (two dark corners, as a disc-centred crop at the field's edge shows) is no
    # whole field either: its disc must not be judged against it
    for half in (image[:, :256], image[:256]):
        qh = G.measure_image(np.ascontiguousarray(half))
        assert not qh.field_edge and qh.field_px == 512


@pytest.mark.parametrize(("threshold", "refer"), [(0.0, 1.0), (0.99, 0.0), (None, None)])
def test_referral_follows_the_models_threshold_and_needs_a_gradable_image(threshold, refer) -> None:
    image, disc, _ = generate_sample(np.random.default_rng(6), 400)
    meta = {"rfnet.referral_vcdr": json.dumps(threshold)}
    with ScriptedBackend(_true_box_script([disc, disc]), metadata=meta) as backend:
        good, black = Segmenter(backend).process_batch([image, np.zeros((400, 400, 3), np.uint8)])
    assert good.gradable and good.cdr is not None and good.cdr.get("refer") == refer
    assert not black.gradable and black.cdr is None  # no verdict, no referral


def test_a_reduced_copy_is_measured_in_the_pictures_pixels() -> None:
    """A picture decoded at 1/2 (rfnet.common.imageio.Photo) gives the measures of the whole
    picture: its size, the grey copy's step in original pixels, about the same field and contrast."""
    import cv2

    image, disc, _ = generate_sample(np.random.default_rng(1), 1024)
    half = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
    full_q, half_q = G.measure_image(image), G.measure_image(half, (1024, 1024))
    assert (half_q.height, half_q.width, half_q.step) == (1024, 1024, full_q.step) == (1024, 1024, 4)
    assert half_q.grey is not None and full_q.grey is not None and half_q.grey.shape == full_q.grey.shape
    assert half_q.field_px == pytest.approx(full_q.field_px, rel=0.02)
    assert half_q.brightness == pytest.approx(full_q.brightness, abs=3)
    assert G.disc_contrast(disc.astype(bool), half_q) == pytest.approx(G.disc_contrast(disc.astype(bool), full_q), rel=0.02)


def test_disc_contrast_on_its_window_equals_the_whole_images() -> None:
    """The ring is dilated around the disc only: the same ratio as dilating the whole grey copy."""
    import cv2

    rng = np.random.default_rng(0)
    q = G.measure_image(rng.integers(0, 255, (700, 900, 3), dtype=np.uint8))
    assert q.grey is not None
    yy, xx = np.ogrid[:700, :900]
    for cy, cx, ry, rx in [(350, 450, 80, 60), (20, 30, 60, 90), (690, 880, 40, 40), (350, 450, 300, 400)]:
        disc = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        small = disc[:: q.step, :: q.step]
        rows, cols = np.flatnonzero(small.any(axis=1)), np.flatnonzero(small.any(axis=0))
        r = max(1, round(G.RING_FRACTION * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)))
        grown = cv2.dilate(small.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        ring = grown.astype(bool) & ~small
        whole = (q.grey[small].mean() / max(q.grey[ring].mean(), 1.0)
                 if ring.sum() >= max(8, small.sum() // 4) else np.nan)
        np.testing.assert_equal(G.disc_contrast(disc, q), whole)
