"""Two backends' detections compared as matched sets, so score ties are not failures (numpy only).

A briefly trained model gives many detections the same score (to float precision): which of
them non-maximum suppression keeps, and which make the top K, is then decided by float noise,
and PyTorch and ONNX Runtime decide differently (measured on an untrained light model at 512 px:
boxes hundreds of pixels apart at score differences of 1e-7, masks equal). Comparing slot by
slot fails such a model although both graphs compute the same thing.

:func:`match_detections` compares, per image, the detections scoring at least ``score_floor``:

1. **matched**: pairs with equal scores (within ``score_atol``) and IoU >= ``iou_min`` (greedy,
   highest IoU first); their boxes, scores and masks are then compared value by value;
2. **tie swaps**: detections left over on both sides whose scores are equal and *tied*: at least
   two detections of one backend's output share that score (or of ``tie_scores``: the
   reference's wider top-K scores, when the outputs hold too few slots to show the tie, as a K=1
   export does), so the choice between them was arbitrary; a matched pair whose boxes differ at such a tied score is a tie swap too. Their
   boxes and masks are not compared (they are different detections);
3. **unmatched**: everything else above the floor (plus ``score_atol``): a detection one backend
   has and the other has not. Any unmatched detection is a divergence and fails the check.

A real divergence still fails: a wrong box or mask at an untied score is matched and compared,
or left unmatched; and a comparison in which no detection could be matched (every score tied)
proves nothing, which :attr:`DetectionMatch.verifiable` reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rfnet.common.postprocess import box_iou


@dataclass
class DetectionMatch:
    """Outcome of :func:`match_detections` over a batch.

    Attributes:
        pairs: (image, reference slot, other slot) matched by IoU at equal score.
        ties: (image, reference slot, other slot) tie swaps: equal, tied scores, different boxes.
        unmatched: one line per detection without a counterpart (the divergences).
        top_tied: images whose top detection (the one segmented) is a tie swap.
    """

    pairs: list[tuple[int, int, int]] = field(default_factory=list)
    ties: list[tuple[int, int, int]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    top_tied: list[int] = field(default_factory=list)

    @property
    def verifiable(self) -> bool:
        """At least one detection was matched and compared."""
        return bool(self.pairs)


def _tied(scores: np.ndarray, slots: list[int], s: float, atol: float) -> bool:
    return sum(1 for k in slots if abs(float(scores[k]) - s) <= atol) >= 2


def _match_image(rs: np.ndarray, rb: np.ndarray, os_: np.ndarray, ob: np.ndarray, floor: float, atol: float,
                 iou_min: float, box_atol: float, ws: np.ndarray | None = None
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[int], list[int]]:
    """One image: (matched pairs, tie swaps, unmatched reference slots, unmatched other slots);
    ``ws``: the reference's wider top-K scores of this image, as further evidence of a tie."""
    r_slots = [i for i in range(rs.shape[0]) if rs[i] >= floor - atol]
    o_slots = [j for j in range(os_.shape[0]) if os_[j] >= floor - atol]
    w_slots = [] if ws is None else [k for k in range(ws.shape[0]) if ws[k] >= floor - atol]

    def tied(s: float) -> bool:
        return (_tied(rs, r_slots, s, atol) or _tied(os_, o_slots, s, atol)
                or (ws is not None and _tied(ws, w_slots, s, atol)))

    cands = sorted(((box_iou(rb[i], ob[j]), i, j) for i in r_slots for j in o_slots
                    if abs(float(rs[i]) - float(os_[j])) <= atol), reverse=True)
    pairs: list[tuple[int, int]] = []
    ties: list[tuple[int, int]] = []
    used_r: set[int] = set()
    used_o: set[int] = set()
    for iou, i, j in cands:
        if iou < iou_min or i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        differ = float(np.abs(rb[i] - ob[j]).max()) > box_atol
        (ties if differ and tied(float(rs[i])) else pairs).append((i, j))
    left_o = [j for j in o_slots if j not in used_o]
    left_r: list[int] = []
    for i in (i for i in r_slots if i not in used_r):
        partners = [j for j in left_o if abs(float(rs[i]) - float(os_[j])) <= atol]
        if partners and tied(float(rs[i])):
            j = min(partners, key=lambda j: abs(float(rs[i]) - float(os_[j])))
            left_o.remove(j)
            ties.append((i, j))
        else:
            left_r.append(i)
    above = lambda s: s >= floor + atol  # noqa: E731  (at the floor itself, float noise decides)
    return sorted(pairs), sorted(ties), [i for i in left_r if above(rs[i])], [j for j in left_o if above(os_[j])]


def match_detections(ref: dict[str, np.ndarray], other: dict[str, np.ndarray], *, score_floor: float = 0.05,
                     score_atol: float = 1e-4, iou_min: float = 0.5, box_atol: float = 1e-2,
                     tie_scores: np.ndarray | None = None) -> DetectionMatch:
    """Match ``other``'s detections to ``ref``'s per image (module docstring).

    Args:
        ref, other: ``{"boxes" [B,K,4], "scores" [B,K], ...}`` of the same images.
        score_floor: detections scoring below it are not compared.
        score_atol: scores closer than this are equal.
        iou_min: least IoU of a matched pair.
        box_atol: box coordinates closer than this (pixels) are the same box.
        tie_scores: [B,K'] the reference's scores at a larger K' (None: only the outputs' own
            slots tell a tie; with K=1 they cannot).
    """
    out = DetectionMatch()
    rs, os_ = np.asarray(ref["scores"], np.float64), np.asarray(other["scores"], np.float64)
    rb, ob = np.asarray(ref["boxes"], np.float64), np.asarray(other["boxes"], np.float64)
    for b in range(rs.shape[0]):
        ws = None if tie_scores is None else np.asarray(tie_scores[b], np.float64)
        pairs, ties, lost_r, lost_o = _match_image(rs[b], rb[b], os_[b], ob[b], score_floor, score_atol, iou_min,
                                                   box_atol, ws)
        out.pairs += [(b, i, j) for i, j in pairs]
        out.ties += [(b, i, j) for i, j in ties]
        out.unmatched += [f"image {b}: reference slot {i} (score {rs[b, i]:.6f}, box {np.round(rb[b, i], 1).tolist()}) "
                          f"has no counterpart" for i in lost_r]
        out.unmatched += [f"image {b}: other slot {j} (score {os_[b, j]:.6f}, box {np.round(ob[b, j], 1).tolist()}) "
                          f"has no counterpart" for j in lost_o]
        if any(i == 0 for i, _ in ties):
            out.top_tied.append(b)
    return out


def matched_diffs(ref: dict[str, np.ndarray], other: dict[str, np.ndarray], match: DetectionMatch) -> dict[str, float]:
    """Max absolute difference of boxes and masks over the matched pairs, of scores over pairs
    and tie swaps (0 when there is nothing to compare)."""
    def worst(name: str, pairs: list[tuple[int, int, int]]) -> float:
        a, o = np.asarray(ref[name]), np.asarray(other[name])
        d = [float(np.nan_to_num(np.abs(a[b, i].astype(np.float64) - o[b, j]), nan=np.inf).max()) for b, i, j in pairs]
        return max(d, default=0.0)
    return {"boxes": worst("boxes", match.pairs), "scores": worst("scores", match.pairs + match.ties),
            "masks": worst("masks", match.pairs)}


def matched_mask_dice(ref: dict[str, np.ndarray], other: dict[str, np.ndarray], match: DetectionMatch,
                      threshold: float = 0.5, atol: float = 1e-4) -> float:
    """Dice of the masks of matched pairs binarised at ``threshold``; a pixel whose reference
    probability lies within ``atol`` of the threshold counts as agreeing (float noise may put
    it on either side). 1.0 when nothing is compared."""
    inter = total = 0
    for b, i, j in match.pairs:
        p, q = np.asarray(ref["masks"][b, i]), np.asarray(other["masks"][b, j])
        pb, qb = p > threshold, q > threshold
        qb = np.where(np.abs(p - threshold) <= atol, pb, qb)
        inter += int((pb & qb).sum())
        total += int(pb.sum() + qb.sum())
    return 1.0 if total == 0 else 2.0 * inter / total
