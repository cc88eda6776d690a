"""The training run: epochs, validation, outputs, checkpoints and exact resumption.

Resumption is exact (same weights as an uninterrupted run, up to floating-point
non-determinism of the device): the checkpoint stores model, optimizer and scheduler state,
the number of completed epochs, the best score and the python / numpy / torch RNG states as
they were after that epoch's validation; the shuffling order of epoch ``e`` depends only on
``(seed, e)``; augmentation draws from torch's generator (in-process) or from worker seeds
derived from that per-epoch generator (``--workers N``).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from rfnet.checkpoint import load_checkpoint, save_checkpoint
from rfnet.common.fileio import atomic_write_text
from rfnet.common.viz import plot_training_curves
from rfnet.config import ModelConfig, TrainConfig
from rfnet.errors import UsageError
from rfnet.data import FundusDataset
from rfnet.data.mixture import MixedDataset
from rfnet.data.torch_dataset import Batch, FundusTorchDataset
from rfnet.training.distributed import DistInfo, agree, barrier, gather_objects, mean_across, unwrap, wrap_model
from rfnet.training.loop import prepare_model, resolve_bf16, train_one_epoch
from rfnet.training.sampler import WeightedMixtureSampler
from rfnet.training.schedule import WarmupStepLR
from rfnet.training.state import capture_rng_state, restore_rng_state, seed_everything
from rfnet.model import build_model
from rfnet.predict import evaluate_dataset

log = logging.getLogger(__name__)

#: Validation columns of metrics.csv -> key of the per-image metrics they average.
VAL_COLUMNS = {"val_dice_disc": "dice_disc", "val_dice_cup": "dice_cup", "val_vcdr_mae": "vcdr_ae", "val_miou": "miou"}


@dataclass(frozen=True)
class RunFiles:
    """Paths of a run directory's outputs."""

    out: Path

    @property
    def last(self) -> Path:
        return self.out / "checkpoint_last.pt"

    @property
    def best(self) -> Path:
        return self.out / "checkpoint_best.pt"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.out / "curves.png"

    @property
    def config(self) -> Path:
        return self.out / "config.json"

    def all(self) -> list[Path]:
        return [self.last, self.best, self.metrics, self.curves, self.config]


@dataclass
class TrainState:
    """Everything beyond the weights that a resumed run needs (stored in the checkpoint's extra)."""

    config: ModelConfig
    model_state: dict[str, Any]
    epoch: int  # completed epochs
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    best_score: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        ckpt = load_checkpoint(path)
        extra = ckpt.extra or {}
        missing = [k for k in ("epoch", "optimizer", "scheduler", "rng") if k not in extra]
        if missing:
            raise ValueError(f"{path}: not a resumable training checkpoint (missing {missing})")
        return cls(
            config=ckpt.config,
            model_state=ckpt.state_dict,
            epoch=int(extra["epoch"]),
            optimizer=extra["optimizer"],
            scheduler=extra["scheduler"],
            rng=extra["rng"],
            best_score=float(extra.get("best_score", -math.inf)),
            best_epoch=int(extra.get("best_epoch", 0)),
            history=list(extra.get("history", [])),
            args=dict(extra.get("args", {})),
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: PyTorch sees no CUDA GPU; use --device cpu")
    return dev


def _plain(value: Any) -> Any:
    """Make run arguments weights_only-safe (tuples -> lists, paths -> str)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _fmt_time(seconds: float) -> str:
    """h:mm:ss -- text on purpose, so plot_training_curves leaves it out of the Dice panel."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv (atomically) from all rows so far; columns = union, first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _sampler(train_ds: FundusDataset, tds: FundusTorchDataset, seed: int, dist_info: DistInfo
             ) -> DistributedSampler | WeightedMixtureSampler | None:
    """A mixture's weighted draw, torchrun's split of a plain dataset, or None (the loader shuffles)."""
    weights = train_ds.item_weights() if isinstance(train_ds, MixedDataset) else None
    if weights is not None:
        return WeightedMixtureSampler(weights, seed, dist_info.rank, dist_info.world_size)
    if dist_info.enabled:
        return DistributedSampler(tds, dist_info.world_size, dist_info.rank, shuffle=True, seed=seed)
    return None


def _make_loader(tds: FundusTorchDataset, batch_size: int, workers: int, generator: torch.Generator,
                 sampler: DistributedSampler | WeightedMixtureSampler | None = None) -> DataLoader:
    return DataLoader(
        tds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=tds.collate,
        generator=generator,  # sampler order and worker seeds: fixed per (seed, epoch)
        persistent_workers=False,
        drop_last=False,
    )


def _unpack(batch: Batch) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    return batch.images, batch.targets


def build_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``t.optimizer`` names over ``model``'s parameters (``UsageError`` for another name)."""
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.momentum, 0.999), weight_decay=t.weight_decay)
    raise UsageError(f"train.optimizer must be 'sgd' or 'adamw', got {t.optimizer!r}")


class _Session:
    """The state of one training run: model, optimizer, schedule, data and bookkeeping."""

    def __init__(self, cfg: ModelConfig, train_ds: FundusDataset, device: torch.device, seed: int, workers: int,
                 dist_info: DistInfo, resume: TrainState | None, validated: bool) -> None:
        t = cfg.train
        self.cfg, self.device, self.seed, self.dist = cfg, device, seed, dist_info
        self.validated = validated  # a validation set scores the epochs (see _score_epoch)
        seed_everything(seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        self.bf16 = resolve_bf16(t.bf16, device.type)
        try:
            built = build_model(cfg)
        except ValueError as exc:  # a module refusing its part of the config (e.g. a bad --set value)
            raise UsageError(f"the model config does not build: {exc}") from exc
        model = prepare_model(built.to(device), channels_last=t.channels_last)
        self.optimizer = build_optimizer(model, t)
        self.tds = FundusTorchDataset(train_ds, cfg, train=True, strict=train_ds.strict)
        self.generator = torch.Generator()
        self.sampler = _sampler(train_ds, self.tds, seed, dist_info)
        self.loader = _make_loader(self.tds, t.batch_size, workers, self.generator, self.sampler)
        self.iters_per_epoch = len(self.loader)
        if t.iterations > 0:
            t.epochs = max(1, math.ceil(t.iterations / self.iters_per_epoch))
        self.scheduler = WarmupStepLR(self.optimizer, self.iters_per_epoch, t.lr_step_epochs, t.lr_gamma,
                                      t.warmup_iters, schedule=t.lr_schedule,
                                      total_iters=self.iters_per_epoch * t.epochs)
        self.start_epoch, self.best_score, self.best_epoch = 0, -math.inf, 0
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._restore(model, resume)
        elif dist_info.enabled:
            torch.manual_seed(seed + 1_000_003 * dist_info.rank)  # different RoI sampling per rank
        self.model = wrap_model(model, dist_info, device, t.sync_bn)

    def _restore(self, model: nn.Module, resume: TrainState) -> None:
        model.load_state_dict(resume.model_state)
        self.optimizer.load_state_dict(resume.optimizer)
        self.scheduler.load_state_dict(resume.scheduler)
        self.start_epoch, self.best_score, self.best_epoch = resume.epoch, resume.best_score, resume.best_epoch
        self.history = list(resume.history)
        ranks = resume.rng.get("ranks")
        if ranks is not None and len(ranks) != self.dist.world_size:
            log.warning("resumed with %d process(es) instead of %d: augmentation will not repeat the "
                        "uninterrupted run exactly", self.dist.world_size, len(ranks))
        rng = ranks[min(self.dist.rank, len(ranks) - 1)] if ranks is not None else resume.rng
        restore_rng_state(rng)
        log.info("resumed after epoch %d (best score %.4f at epoch %d: %s)", self.start_epoch, self.best_score,
                 self.best_epoch, score_name(self.validated))

    def train_epoch(self, epoch: int, progress: bool) -> tuple[dict[str, Any], int]:
        """One epoch -> (metrics row with the losses averaged over ranks, bad items skipped)."""
        t = self.cfg.train
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        skipped = 0

        def batches() -> Iterator[Batch]:  # count bad items across worker processes
            nonlocal skipped
            for b in self.loader:
                skipped += b.skipped
                yield b

        losses = train_one_epoch(
            self.model, batches(), _unpack, self.optimizer, self.scheduler, self.device,
            grad_clip=t.grad_clip, epoch=epoch, total=self.iters_per_epoch, progress=progress and self.dist.is_main,
            log_every=max(1, self.iters_per_epoch // 5) if self.dist.is_main else 0, bf16=self.bf16,
            channels_last=t.channels_last,
        )
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": losses.pop("lr")}
        losses.pop("iterations", None)
        losses = mean_across(self.dist, losses)
        row["loss"] = losses.pop("loss", math.nan)
        row.update(sorted(losses.items()))
        return row, skipped

    def checkpoint_extra(self, epoch: int, row: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """What checkpoint_last.pt needs to resume (every rank's RNG state included)."""
        rng = gather_objects(self.dist, capture_rng_state())
        return {
            "epoch": epoch + 1,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {**rng[0], "ranks": rng} if self.dist.enabled else rng[0],
            "best_score": float(self.best_score),
            "best_epoch": int(self.best_epoch),
            "history": _plain(self.history),
            "args": args,
            "metrics": _plain(row),
        }


def _validate(sess: _Session, val_ds: FundusDataset, batch_size: int, progress: bool, row: dict[str, Any]
              ) -> float:
    """Validate the current weights into ``row``; returns the model-selection score."""
    result = evaluate_dataset(unwrap(sess.model), val_ds, sess.cfg, sess.device, batch_size=batch_size,
                              progress=progress, desc=f"validate {row['epoch']}")
    for col, key in VAL_COLUMNS.items():
        row[col] = result.mean(key)
    row["val_images"] = len(result.rows)
    return result.score


def _write_epoch(sess: _Session, files: RunFiles, row: dict[str, Any], improved: bool, args: dict[str, Any]) -> None:
    """metrics.csv and curves.png, then the checkpoints (rank 0 writes; every write atomic)."""
    extra = sess.checkpoint_extra(int(row["epoch"]) - 1, row, args)  # collective: every rank calls it
    if not sess.dist.is_main:
        return
    write_metrics_csv(files.metrics, sess.history)
    try:
        plot_training_curves(files.metrics, files.curves)
    except Exception as exc:  # a plotting problem must not stop training
        log.warning("could not plot %s: %s", files.curves, exc)
    model = unwrap(sess.model)
    save_checkpoint(files.last, model, sess.cfg, extra=extra)
    if improved:
        save_checkpoint(files.best, model, sess.cfg, extra={"epoch": row["epoch"], "metrics": _plain(row), "args": args})


def _epoch_text(row: dict[str, Any], validated: bool, has_val: bool, val_time: float) -> str:
    if validated:
        return (f"val Dice disc {row['val_dice_disc']:.4f} cup {row['val_dice_cup']:.4f} "
                f"vCDR MAE {row['val_vcdr_mae']:.4f} (validation {val_time:.0f} s)")
    return "not validated this epoch" if has_val else "no validation"


def _report_skipped(train_ds: FundusDataset, val_ds: FundusDataset | None, skipped_train: int, workers: int) -> int:
    skipped_val = len(val_ds.bad_names) if val_ds is not None else 0
    bad_train = train_ds.bad_names if workers == 0 else []
    if skipped_train or skipped_val:
        log.warning(
            "skipped bad items: %d training item(s)%s, %d validation item(s)%s",
            skipped_train, f" ({', '.join(bad_train)})" if bad_train else "", skipped_val,
            f" ({', '.join(val_ds.bad_names)})" if val_ds is not None and skipped_val else "",
        )
    for ds in (train_ds, val_ds):
        if ds is not None and ds.problems:
            log.warning("%s", ds.report())
    return skipped_val


def run_training(
    cfg: ModelConfig,
    train_ds: FundusDataset,
    val_ds: FundusDataset | None,
    files: RunFiles,
    *,
    device: torch.device,
    seed: int = 0,
    workers: int = 0,
    run_args: dict[str, Any] | None = None,
    resume: TrainState | None = None,
    max_time_s: float | None = None,
    progress: bool = True,
    val_batch_size: int | None = None,
    val_every: int = 1,
    dist_info: DistInfo | None = None,
) -> dict[str, Any]:
    """Train ``cfg.train.epochs`` epochs (or continue ``resume``), writing the run files.

    Validation runs every ``val_every`` epochs and always after the last one (also when the
    time budget ``max_time_s`` ends the run early); the best checkpoint is chosen among
    validated epochs. Under torchrun (``dist_info``) every rank trains, rank 0 validates and
    writes. Returns a summary: ``epochs_done``, ``best_score``, ``best_epoch``, ``elapsed_s``,
    ``stopped_early`` (time budget), ``skipped_train`` / ``skipped_val`` (bad items), ``last``
    (the last metrics row), ``model`` (the trained model, unwrapped).
    """
    t0 = time.monotonic()
    info = dist_info or DistInfo()
    sess = _Session(cfg, train_ds, device, seed, workers, info, resume, validated=val_ds is not None)
    t, args = cfg.train, _plain(run_args or {})
    if resume is None and info.is_main:
        atomic_write_text(files.config, cfg.to_json() + "\n")
    if sess.start_epoch >= t.epochs:
        log.info("nothing to do: %d of %d epochs already done", sess.start_epoch, t.epochs)
    log.info("%d train images, %d iterations/epoch, %d epochs, batch %d x %d process(es), lr %g (%s schedule), "
             "warm-up %d iterations, device %s", len(train_ds), sess.iters_per_epoch, t.epochs, t.batch_size,
             info.world_size, t.lr, t.lr_schedule, t.warmup_iters, device)
    skipped_train, stopped_early, val_time = 0, False, 0.0
    train_times: list[float] = []
    row: dict[str, Any] = sess.history[-1] if sess.history else {}
    for epoch in range(sess.start_epoch, t.epochs):
        te, cpu0 = time.monotonic(), time.process_time()
        row, skipped = sess.train_epoch(epoch, progress)
        skipped_train = max(skipped_train, skipped)
        train_times.append(time.monotonic() - te)
        expected_next = max(train_times[-3:]) + val_time
        out_of_time = _out_of_time(info, max_time_s, time.monotonic() - t0, val_time, expected_next,
                                   epoch + 1 < t.epochs)
        validate = val_ds is not None and (epoch + 1 == t.epochs or out_of_time or (epoch + 1) % max(1, val_every) == 0)
        validate = validate and info.is_main  # rank 0 validates; the others wait at the barrier
        score, val_time = _score_epoch(sess, val_ds, validate, val_batch_size or t.batch_size, progress, row, val_time)
        barrier(info)
        row["epoch_time"] = _fmt_time(time.monotonic() - te)
        improved = _record_epoch(sess, files, row, score, epoch, args)
        log.info("epoch %d/%d  loss %.4f  lr %.2g  %s  [%s, CPU %.0f s]%s", epoch + 1, t.epochs, row["loss"], row["lr"],
                 _epoch_text(row, validate, val_ds is not None, val_time), row["epoch_time"],
                 time.process_time() - cpu0, "  *best*" if improved else "")
        if out_of_time:
            log.info("time budget: %.1f of %.1f min used, another epoch needs ~%.1f min; stopping after epoch %d "
                     "(continue with --resume)", (time.monotonic() - t0) / 60, (max_time_s or 0) / 60,
                     expected_next / 60, epoch + 1)
            stopped_early = True
            break
    skipped_val = _report_skipped(train_ds, val_ds, skipped_train, workers)
    return _summary(sess, row, time.monotonic() - t0, stopped_early, skipped_train, skipped_val)


def score_name(validated: bool) -> str:
    """What an epoch's score is (:func:`_score_epoch`): with or without a validation set."""
    return "mean validation Dice" if validated else "minus the training loss"


def _score_epoch(sess: _Session, val_ds: FundusDataset | None, validate: bool, batch_size: int, progress: bool,
                 row: dict[str, Any], val_time: float) -> tuple[float, float]:
    """(score, validation seconds) of the epoch just trained: minus the training loss when the
    run has no validation set (the last epoch is then the best), the validation's mean Dice
    when ``validate``, else NaN; ``val_time`` is kept when nothing is validated."""
    if val_ds is None:
        return -float(row["loss"]), val_time
    if not validate:
        return math.nan, val_time
    tv = time.monotonic()
    score = _validate(sess, val_ds, batch_size, progress, row)
    return score, time.monotonic() - tv


def _out_of_time(info: DistInfo, max_time_s: float | None, elapsed_s: float, val_time: float,
                 expected_next: float, more_epochs: bool) -> bool:
    """Will the time budget end the run after this epoch (then it must be validated)? The next
    epoch is estimated pessimistically (``expected_next``: the slowest recent training + one
    validation); every rank agrees on the answer."""
    return agree(info, max_time_s is not None and more_epochs
                 and elapsed_s + val_time + expected_next > max_time_s)


def _record_epoch(sess: _Session, files: RunFiles, row: dict[str, Any], score: float, epoch: int,
                  args: dict[str, Any]) -> bool:
    """Append the epoch's metrics row, update the best epoch, write the run files; improved?"""
    sess.history.append(row)
    improved = not math.isnan(score) and (score > sess.best_score or sess.best_epoch == 0)
    if improved:
        sess.best_score, sess.best_epoch = score, epoch + 1
    _write_epoch(sess, files, row, improved, args)
    return improved


def _summary(sess: _Session, row: dict[str, Any], elapsed_s: float, stopped_early: bool, skipped_train: int,
             skipped_val: int) -> dict[str, Any]:
    """What :func:`run_training` returns."""
    return {
        "epochs_done": int(row.get("epoch", sess.start_epoch)) if row else sess.start_epoch,
        "best_score": sess.best_score if sess.best_epoch else None,
        "best_epoch": sess.best_epoch or None,
        "elapsed_s": elapsed_s,
        "stopped_early": stopped_early,
        "skipped_train": skipped_train,
        "skipped_val": skipped_val,
        "last": row,
        "model": unwrap(sess.model),
    }
