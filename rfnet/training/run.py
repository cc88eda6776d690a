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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from rfnet.checkpoint import load_checkpoint, save_checkpoint
from rfnet.common.fileio import atomic_write_text
from rfnet.common.viz import plot_training_curves
from rfnet.config import ModelConfig
from rfnet.data import FundusDataset
from rfnet.data.torch_dataset import Batch, FundusTorchDataset
from rfnet.training.loop import prepare_model, train_one_epoch
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


def _make_loader(tds: FundusTorchDataset, batch_size: int, workers: int, generator: torch.Generator) -> DataLoader:
    return DataLoader(
        tds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=tds.collate,
        generator=generator,  # sampler order and worker seeds: fixed per (seed, epoch)
        persistent_workers=False,
        drop_last=False,
    )


def _unpack(batch: Batch) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    return batch.images, batch.targets


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
) -> dict[str, Any]:
    """Train ``cfg.train.epochs`` epochs (or continue ``resume``), writing the run files.

    Validation runs every ``val_every`` epochs and always after the last one (also when the
    time budget ``max_time_s`` ends the run early); the best checkpoint is chosen among
    validated epochs. Returns a summary: ``epochs_done``, ``best_score``, ``best_epoch``, ``elapsed_s``,
    ``stopped_early`` (time budget), ``skipped_train`` / ``skipped_val`` (bad items), ``last``
    (the last metrics row).
    """
    t0 = time.monotonic()
    seed_everything(seed)
    model = prepare_model(build_model(cfg).to(device), channels_last=cfg.train.channels_last)
    t = cfg.train
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    tds = FundusTorchDataset(train_ds, cfg, train=True, strict=train_ds.strict)
    generator = torch.Generator()
    loader = _make_loader(tds, t.batch_size, workers, generator)
    iters_per_epoch = len(loader)
    scheduler = WarmupStepLR(optimizer, iters_per_epoch, t.lr_step_epochs, t.lr_gamma, t.warmup_iters,
                             schedule=t.lr_schedule, total_iters=iters_per_epoch * t.epochs)
    start_epoch, best_score, best_epoch = 0, -math.inf, 0
    history: list[dict[str, Any]] = []
    args = _plain(run_args or {})
    if resume is not None:
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        start_epoch, best_score, best_epoch = resume.epoch, resume.best_score, resume.best_epoch
        history = list(resume.history)
        restore_rng_state(resume.rng)
        log.info("resumed after epoch %d (best mean Dice %.4f at epoch %d)", start_epoch, best_score, best_epoch)
    else:
        atomic_write_text(files.config, cfg.to_json() + "\n")
    if start_epoch >= t.epochs:
        log.info("nothing to do: %d of %d epochs already done", start_epoch, t.epochs)
    log.info(
        "%d train images, %d iterations/epoch, %d epochs, lr %g x%g every %d epochs, warm-up %d iterations, device %s",
        len(train_ds), iters_per_epoch, t.epochs, t.lr, t.lr_gamma, t.lr_step_epochs, t.warmup_iters, device,
    )
    skipped_train = 0
    stopped_early = False
    train_times: list[float] = []
    val_time = 0.0
    row: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start_epoch, t.epochs):
        te, cpu0 = time.monotonic(), time.process_time()
        generator.manual_seed(seed * 1_000_003 + epoch)
        skipped_epoch = 0

        def batches():  # count bad items across worker processes
            nonlocal skipped_epoch
            for b in loader:
                skipped_epoch += b.skipped
                yield b

        losses = train_one_epoch(
            model, batches(), _unpack, optimizer, scheduler, device,
            grad_clip=t.grad_clip, epoch=epoch, total=iters_per_epoch, progress=progress,
            log_every=max(1, iters_per_epoch // 5), bf16=t.bf16, channels_last=t.channels_last,
        )
        skipped_train = max(skipped_train, skipped_epoch)
        train_times.append(time.monotonic() - te)
        row = {"epoch": epoch + 1, "lr": losses.pop("lr")}
        losses.pop("iterations", None)
        row["loss"] = losses.pop("loss", math.nan)
        row.update(sorted(losses.items()))
        # Will the time budget end the run after this epoch? Then it must be validated.
        # Pessimistic estimate of the next epoch: the slowest recent training + one validation.
        expected_next = max(train_times[-3:]) + val_time
        out_of_time = (
            max_time_s is not None and epoch + 1 < t.epochs and time.monotonic() - t0 + val_time + expected_next > max_time_s
        )
        last = epoch + 1 == t.epochs or out_of_time
        validate = val_ds is not None and (last or (epoch + 1) % max(1, val_every) == 0)
        score = math.nan
        if validate:
            tv = time.monotonic()
            result = evaluate_dataset(
                model, val_ds, cfg, device, batch_size=val_batch_size or t.batch_size,
                progress=progress, desc=f"validate {epoch + 1}",
            )
            val_time = time.monotonic() - tv
            for col, key in VAL_COLUMNS.items():
                row[col] = result.mean(key)
            row["val_images"] = len(result.rows)
            score = result.score
        elif val_ds is None:
            score = -float(row["loss"])  # no validation: the last epoch is the best
        row["epoch_time"] = _fmt_time(time.monotonic() - te)
        history.append(row)
        improved = not math.isnan(score) and (score > best_score or best_epoch == 0)
        if improved:
            best_score, best_epoch = score, epoch + 1
        # files: metrics first (cheap), then checkpoints; each write is atomic
        write_metrics_csv(files.metrics, history)
        try:
            plot_training_curves(files.metrics, files.curves)
        except Exception as exc:  # a plotting problem must not stop training
            log.warning("could not plot %s: %s", files.curves, exc)
        extra = {
            "epoch": epoch + 1,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(),
            "best_score": float(best_score),
            "best_epoch": int(best_epoch),
            "history": _plain(history),
            "args": args,
            "metrics": _plain(row),
        }
        save_checkpoint(files.last, model, cfg, extra=extra)
        if improved:
            save_checkpoint(files.best, model, cfg, extra={"epoch": epoch + 1, "metrics": _plain(row), "args": args})
        if validate:
            val_txt = (
                f"val Dice disc {row['val_dice_disc']:.4f} cup {row['val_dice_cup']:.4f} "
                f"vCDR MAE {row['val_vcdr_mae']:.4f} (validation {val_time:.0f} s)"
            )
        else:
            val_txt = "no validation" if val_ds is None else "not validated this epoch"
        log.info(
            "epoch %d/%d  loss %.4f  lr %.2g  %s  [%s, CPU %.0f s]%s", epoch + 1, t.epochs, row["loss"], row["lr"],
            val_txt, row["epoch_time"], time.process_time() - cpu0, "  *best*" if improved else "",
        )
        if out_of_time:
            log.info(
                "time budget: %.1f of %.1f min used, another epoch needs ~%.1f min; stopping after epoch %d "
                "(continue with --resume)", (time.monotonic() - t0) / 60, (max_time_s or 0) / 60,
                expected_next / 60, epoch + 1,
            )
            stopped_early = True
            break
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
    return {
        "epochs_done": int(row.get("epoch", start_epoch)) if row else start_epoch,
        "best_score": best_score if best_epoch else None,
        "best_epoch": best_epoch or None,
        "elapsed_s": time.monotonic() - t0,
        "stopped_early": stopped_early,
        "skipped_train": skipped_train,
        "skipped_val": skipped_val,
        "last": row,
    }
