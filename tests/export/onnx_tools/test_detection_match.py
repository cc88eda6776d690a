"""export/onnx_tools/detection_match.py: ties pass, real divergence fails (numpy outputs written by hand)."""
from __future__ import annotations

import numpy as np

from rfnet.export.onnx_tools.detection_match import match_detections, matched_diffs, matched_mask_dice
from rfnet.common.postprocess import box_iou

M = 4


def _out(scores: list[float], boxes: list[list[float]], masks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    k = len(scores)
    if masks is None:  # a mask per slot that depends on its box, so swapped slots have different masks
        masks = np.stack([np.full((2, M, M), (b[0] % 7) / 10 + 0.1, np.float32) for b in boxes])
    return {"scores": np.array([scores], np.float32), "boxes": np.array([boxes], np.float32),
            "masks": masks[None].astype(np.float32)}


#: The reference: a confident disc, then a group of equally scored boxes along the top edge (an
#: undertrained model), then padding.
REF = _out([0.9, 0.4977088, 0.4977088, 0.4977088, 0.0],
           [[100, 100, 160, 160], [20, 0, 66, 15], [70, 0, 116, 15], [120, 0, 166, 15], [0, 0, 0, 0]])


def test_box_iou() -> None:
    assert box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == 1 / 3
    assert box_iou(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0])) == 0.0


def test_identical_outputs_match_slot_for_slot() -> None:
    m = match_detections(REF, REF)
    assert [(i, j) for _, i, j in m.pairs] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert not m.ties and not m.unmatched and m.verifiable
    assert matched_diffs(REF, REF, m) == {"boxes": 0.0, "scores": 0.0, "masks": 0.0}


def test_tied_boxes_kept_differently_are_tie_swaps_not_failures() -> None:
    # The other backend kept other boxes of the tied group (hundreds of px away), in another order,
    # with scores differing by float noise; the untied disc is the same.
    other = _out([0.9, 0.4977089, 0.4977088, 0.4977088, 0.0],
                 [[100, 100, 160, 160], [400, 0, 446, 15], [70, 0, 116, 15], [300, 0, 346, 15], [0, 0, 0, 0]])
    m = match_detections(REF, other)
    assert [(i, j) for _, i, j in m.pairs] == [(0, 0), (2, 2)]
    assert len(m.ties) == 2 and not m.unmatched and m.verifiable and m.top_tied == []
    d = matched_diffs(REF, other, m)
    assert d["boxes"] == 0.0 and d["masks"] == 0.0 and d["scores"] < 1e-6
    assert matched_mask_dice(REF, other, m) == 1.0


def test_a_moved_box_at_an_untied_score_fails() -> None:
    other = {k: v.copy() for k, v in REF.items()}
    other["boxes"][0, 0] += np.float32(6.0)  # the disc box is off by 6 px (IoU 0.68)
    m = match_detections(REF, other)
    assert (0, 0, 0) in m.pairs and matched_diffs(REF, other, m)["boxes"] == 6.0
    other["boxes"][0, 0] += np.float32(200.0)  # now nowhere near: no counterpart at all
    m = match_detections(REF, other)
    assert any("reference slot 0" in u for u in m.unmatched) and any("other slot 0" in u for u in m.unmatched)


def test_a_missing_or_rescored_detection_fails() -> None:
    other = {k: v.copy() for k, v in REF.items()}
    other["scores"][0, 0] = 0.7  # the disc scores differently
    assert match_detections(REF, other).unmatched
    other = {k: v.copy() for k, v in REF.items()}
    other["scores"][0, 3] = 0.0  # one of the tied boxes is missing, no other takes its place
    m = match_detections(REF, other)
    assert len(m.unmatched) == 1 and "reference slot 3" in m.unmatched[0]


def test_equal_but_untied_scores_with_other_boxes_fail() -> None:
    """A wrong box decoder with right scores: each score is unique, so no tie explains the swap."""
    ref = _out([0.9, 0.6, 0.0], [[100, 100, 160, 160], [300, 300, 350, 350], [0, 0, 0, 0]])
    other = _out([0.9, 0.6, 0.0], [[10, 10, 70, 70], [200, 300, 250, 350], [0, 0, 0, 0]])
    m = match_detections(ref, other)
    assert len(m.unmatched) == 4 and not m.ties and not m.verifiable


def test_masks_of_matched_pairs_are_compared() -> None:
    other = {k: v.copy() for k, v in REF.items()}
    other["masks"][0, 0] += np.float32(0.3)
    m = match_detections(REF, other)
    assert matched_diffs(REF, other, m)["masks"] > 0.29
    assert matched_mask_dice(REF, other, m) < 1.0


def test_near_threshold_mask_pixels_may_flip() -> None:
    ref = _out([0.9], [[0, 0, 10, 10]], masks=np.full((1, 2, M, M), 0.5 + 1e-6, np.float32))
    other = _out([0.9], [[0, 0, 10, 10]], masks=np.full((1, 2, M, M), 0.5 - 1e-6, np.float32))
    m = match_detections(ref, other)
    assert matched_mask_dice(ref, other, m, atol=1e-4) == 1.0
    assert matched_mask_dice(ref, other, m, atol=0.0) == 0.0


def test_the_score_floor() -> None:
    ref = _out([0.9, 0.03], [[0, 0, 50, 50], [200, 200, 250, 250]])
    other = _out([0.9, 0.03], [[0, 0, 50, 50], [400, 400, 450, 450]])
    assert not match_detections(ref, other, score_floor=0.05).unmatched  # below the floor: not compared
    assert match_detections(ref, other, score_floor=0.01).unmatched


def test_a_tie_at_the_top_of_a_k1_output_is_told_by_the_wider_reference_scores() -> None:
    """K=1: each backend kept a different box of a tied group; only the reference's top-10
    scores show the tie. Without them the two boxes are unmatched (a failure); a K=1 output
    whose wider scores are untied still fails."""
    ref = _out([0.4977088], [[20, 0, 66, 15]])
    other = _out([0.4977089], [[400, 0, 446, 15]])
    assert len(match_detections(ref, other).unmatched) == 2
    wide = np.array([[0.4977088, 0.4977088, 0.4977088, 0.2]], np.float32)
    m = match_detections(ref, other, tie_scores=wide)
    assert [(i, j) for _, i, j in m.ties] == [(0, 0)] and not m.unmatched and m.top_tied == [0]
    untied = np.array([[0.4977088, 0.3, 0.2, 0.1]], np.float32)
    assert len(match_detections(ref, other, tie_scores=untied).unmatched) == 2
