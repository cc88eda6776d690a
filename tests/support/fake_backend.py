"""A deterministic stand-in backend whose detections the test chooses (numpy only).

:class:`ScriptedBackend` answers every image with one detection: by default a square box
centred in the network input (a quarter of its side), score 0.9, a round disc (radius 0.45 of
the mask) and cup (0.225); a test may give, per call, the boxes (network-input pixels) and
scores instead, e.g. the true disc box of a generated fundus mapped through its letterbox.
Used where a verdict depends only on the image or on the model's outputs, not on what a
trained model would make of the pixels.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rfnet.common.backend import Backend, TensorSpec
from rfnet.common.contract import ModelMetadata

S, K, M = 128, 2, 28
F32 = np.dtype(np.float32)


def round_masks(disc_r: float = 0.45, cup_r: float = 0.225) -> np.ndarray:
    """float32 [2,M,M]: disc and cup discs of the given radii (fractions of M), 0.95 inside."""
    yy, xx = np.mgrid[0:M, 0:M] + 0.5
    d = np.hypot(xx - M / 2, yy - M / 2)
    return np.stack([(d <= disc_r * M) * 0.95, (d <= cup_r * M) * 0.95]).astype(np.float32)


class ScriptedBackend(Backend):
    """Args:
        script: ``script(tensor [3,S,S]) -> (box [4] in network-input pixels, score)`` per image
            (default: the centred box, score 0.9).
        masks: [2,M,M] disc / cup probabilities of the detection (default :func:`round_masks`).
        min_disc_score: the model's ``rfnet.min_disc_score`` (None: the key is absent).
        metadata: further ``rfnet.*`` strings of the model (``rfnet.grading_limits``, ...).
    """

    name = "scripted"

    def __init__(self, script: Callable[[np.ndarray], tuple[np.ndarray, float]] | None = None, *,
                 masks: np.ndarray | None = None, min_disc_score: float | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__("scripted.onnx")
        self.extra_metadata = dict(metadata or {})
        self.script = script or (lambda _x: (np.array([S * 3 / 8, S * 3 / 8, S * 5 / 8, S * 5 / 8]), 0.9))
        self.masks = round_masks() if masks is None else masks
        self.min_disc_score = min_disc_score

    def _has_source(self) -> bool:
        return True

    def _load(self) -> None:
        self.inputs = [TensorSpec("image", F32, (-1, 3, S, S))]
        self.outputs = [TensorSpec("boxes", F32, (-1, K, 4)), TensorSpec("scores", F32, (-1, K)),
                        TensorSpec("masks", F32, (-1, K, 2, M, M))]
        meta = ModelMetadata(preset="test", input_size=S, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), mask_size=M,
                             top_k=K, class_names=("disc", "cup"), precision="fp32")
        strings = meta.to_strings()
        if self.min_disc_score is None:
            del strings["rfnet.min_disc_score"]
        else:
            strings["rfnet.min_disc_score"] = str(self.min_disc_score)
        self.metadata = {**strings, **self.extra_metadata}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["image"]
        b = x.shape[0]
        boxes = np.zeros((b, K, 4), np.float32)
        scores = np.zeros((b, K), np.float32)
        masks = np.zeros((b, K, 2, M, M), np.float32)
        for i in range(b):
            box, score = self.script(x[i])
            boxes[i, 0], scores[i, 0], masks[i, 0] = box, score, self.masks
        return {"boxes": boxes, "scores": scores, "masks": masks}

    def _close(self) -> None:
        pass
