"""PyTorch Dataset over any loader, producing the training targets of docs/design.md.

Per item: the sample is letterboxed to ``input.size`` with :mod:`rfnet.common.preprocess`
(the very code the deployment runtime uses), augmented when training (flips and 90-degree
rotations, paper section 4.2; with ``train.scale_jitter`` / ``rotate_deg`` / ``translate`` /
``crop_size`` one affine warp from the original instead, :mod:`rfnet.data.geometry`) and
normalised::

    image   float32 [3, S, S]  (x - mean) / std, zero (black) padding before normalisation
    target  {"boxes": float32 [1, 4] xyxy in network-input pixels,
             "labels": int64 [1] = 1 (disc),
             "masks": float32 [1, 2, S, S] (disc incl. cup, cup) at network-input resolution, 0/1}
    meta    the sample's meta + "letterbox" (Letterbox) + "index" + "augment" (FlipRotate)
            (+ "affine": the 2x3 original -> input matrix on the geometric path)

Decoded samples are kept in memory after their first use (``cache=True``, the default): a
training run decodes each JPEG once, not once per epoch (DataLoader workers keep a cache each).

A bad item (unreadable file, empty disc, ...) yields ``None``; :func:`collate_fn` drops
``None`` items and reports how many it dropped in ``Batch.skipped``, so the trainer can
count them across worker processes and report the total; with ``strict=True`` the error
is raised instead.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rfnet.common.preprocess import Letterbox, letterbox, letterbox_mask, normalize
from rfnet.config import InputConfig, ModelConfig
from rfnet.data.augment import ColorJitter, FlipRotate
from rfnet.data.base import FundusDataset
from rfnet.data.geometry import GeometryJitter, random_view, warp_content, warp_image, warp_mask
from rfnet.data.sample import Sample, SampleError, box_from_mask

log = logging.getLogger(__name__)

Item = tuple[Tensor, dict[str, Tensor], dict[str, Any]]


class Batch(NamedTuple):
    """A collated batch: images float32 [B,3,S,S] (B may be 0), B target dicts, B metas,
    and the number of bad items dropped from this batch."""

    images: Tensor
    targets: list[dict[str, Tensor]]
    metas: list[dict[str, Any]]
    skipped: int


class FundusTorchDataset(Dataset[Item | None]):
    """Wrap a :class:`~rfnet.data.base.FundusDataset` for ``torch.utils.data.DataLoader``.

    Args:
        loader: any dataset from :func:`rfnet.data.load_dataset`.
        cfg: a :class:`ModelConfig` or its :class:`InputConfig` (size, mean, std).
        train: training mode (augmentation on unless ``augment`` says otherwise).
        augment: override; defaults to ``train`` (and ``cfg.train.augment`` for a ModelConfig).
        strict: raise on a bad item instead of returning ``None``.

    Augmentation randomness comes from torch's generator, so ``torch.manual_seed`` makes a
    run reproducible and DataLoader workers draw different transforms.
    """

    def __init__(
        self,
        loader: FundusDataset,
        cfg: ModelConfig | InputConfig,
        *,
        train: bool = False,
        augment: bool | None = None,
        strict: bool = False,
        cache: bool = True,
    ) -> None:
        self.loader = loader
        self.input_cfg = cfg.input if isinstance(cfg, ModelConfig) else cfg
        default_aug = train and (cfg.train.augment if isinstance(cfg, ModelConfig) else True)
        self.augment = default_aug if augment is None else augment
        self.color_jitter = cfg.train.color_jitter if isinstance(cfg, ModelConfig) else 0.0
        t = cfg.train if isinstance(cfg, ModelConfig) else None
        self.geometry = GeometryJitter(t.scale_jitter, t.rotate_deg, t.translate, t.crop_size) if t else GeometryJitter()
        self.train = train
        self.strict = strict
        #: items skipped in *this* process (DataLoader workers keep their own; use Batch.skipped)
        self.skipped: dict[str, str] = {}
        self._cache: dict[int, Sample] | None = {} if cache else None

    def _sample(self, index: int) -> Sample:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self.loader[index]
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, index: int) -> Item | None:
        try:
            sample = self._sample(index)
        except SampleError as exc:
            if self.strict:
                raise
            self.skipped[exc.name] = exc.problem
            return None
        lb = Letterbox.compute(sample.image.shape[0], sample.image.shape[1], self.input_cfg.size)
        meta = dict(sample.meta)
        meta.update({"letterbox": lb, "index": int(index)})
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item())) if self.augment else None
        if rng is not None and self.geometry.active:
            image, masks, box = self._warped(sample, lb, rng, meta)
        else:
            image, masks, box = self._letterboxed(sample, lb, rng, meta)
        x = normalize(image, self.input_cfg.mean, self.input_cfg.std)
        target = {
            "boxes": torch.from_numpy(box.astype(np.float32)).reshape(1, 4),
            "labels": torch.ones(1, dtype=torch.int64),
            "masks": torch.from_numpy(masks).unsqueeze(0),
        }
        return torch.from_numpy(x), target, meta

    def _letterboxed(self, sample: Sample, lb: Letterbox, rng: np.random.Generator | None,
                     meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paper path: letterbox, then exact flips / quarter turns (+ colour jitter).
        Returns (image uint8 [S,S,3], masks float32 [2,S,S], box [1,4])."""
        image, _ = letterbox(sample.image, lb.size)
        masks = np.stack([letterbox_mask(m, lb) for m in (sample.disc, sample.cup)], axis=-1)  # [S,S,2]
        box = lb.boxes_to_input(sample.box[None].astype(np.float64))
        op = FlipRotate()
        if rng is not None:
            op = FlipRotate.random(rng)
            if self.color_jitter > 0:
                image = ColorJitter.random(rng, self.color_jitter).apply(image, lb.content_region())
            if not op.is_identity:
                image, masks = op.apply_array(image), op.apply_array(masks)
                box = op.apply_boxes(box, lb.size, lb.size)
        meta["augment"] = op
        return image, _mask_target(masks), box

    def _warped(self, sample: Sample, lb: Letterbox, rng: np.random.Generator,
                meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Geometric path: one affine warp from the original (flips, zoom, rotation, shift/crop);
        returns as :meth:`_letterboxed`."""
        m, op, side = random_view(lb, sample.box, self.geometry, rng)
        image = warp_image(sample.image, m, side)
        disc, cup = warp_mask(sample.disc, m, side), warp_mask(sample.cup, m, side)
        if self.color_jitter > 0:
            content = warp_content(sample.image.shape[:2], m, side)
            image = ColorJitter.random(rng, self.color_jitter).apply_masked(image, content)
        if not disc.any():  # a tiny disc lost to the warp: use the plain view of this item
            return self._letterboxed(sample, lb, rng, meta)
        cup &= disc
        meta.update({"augment": op, "affine": m})
        return image, _mask_target(np.stack([disc, cup], axis=-1)), box_from_mask(disc)[None]

    def collate(self, batch: list[Item | None]) -> Batch:
        """:func:`collate_fn` that knows the input size (for all-bad batches)."""
        return collate_fn(batch, self.input_cfg.size)


def _mask_target(masks: np.ndarray) -> np.ndarray:
    """[S,S,2] bool masks -> float32 [2,S,S] of 0 / 1."""
    return np.moveaxis(masks, -1, 0).astype(np.float32)


def collate_fn(batch: list[Item | None], size: int = 0) -> Batch:
    """Stack good items, drop ``None`` (bad) ones and count them.

    Returns a :class:`Batch`; when every item was bad, ``images`` has shape [0, 3, size, size].
    """
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return Batch(torch.zeros((0, 3, size, size), dtype=torch.float32), [], [], skipped)
    images = torch.stack([b[0] for b in good])
    return Batch(images, [b[1] for b in good], [b[2] for b in good], skipped)
