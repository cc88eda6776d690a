"""Train RF-Net: ``python -m rfnet.train --dataset D --data-root PATH --out runs/NAME``.

Paper defaults (section 4.2): SGD momentum 0.9, lr 0.01 x0.1 every 30 epochs, 100 epochs,
batch 4, random flips and 90-degree rotations, plus a short linear warm-up
(``cfg.train.warmup_iters``) because the network is trained from scratch.

Per epoch the run directory gets (all written atomically):
``metrics.csv`` (one row per epoch: losses, lr, validation Dice disc / cup, vCDR MAE, mIoU),
``curves.png``, ``checkpoint_last.pt`` (model + optimizer + scheduler + RNG states + epoch),
``checkpoint_best.pt`` (best mean of validation disc and cup Dice; the last epoch when there
is no validation) and, once, ``config.json`` (the resolved typed config).

``--resume`` continues a stopped run exactly where its last completed epoch ended; the run's
settings come from its checkpoint (only --epochs, --max-time-min, --val-every, --device, --workers,
--threads, --strict, --data-root / --val-data-root and --no-progress may change).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.fileio import OutputExistsError
from rfnet.config import PRESETS, ModelConfig, get_preset
from rfnet.data import SampleError
from rfnet.data.expert_scale import dataset_expert_scale
from rfnet.errors import UsageError
from rfnet.training.datasets import DataSelection, add_data_arguments, data_specs, select_datasets
from rfnet.training.distributed import DistInfo, init_distributed, shutdown
from rfnet.training.loop import NonFiniteLossError
from rfnet.training.overrides import apply_overrides
from rfnet.training.run import RunFiles, TrainState, resolve_device, run_training

log = logging.getLogger(__name__)

#: Arguments that define a run; on --resume they come from the checkpoint.
RUN_ARGS = (
    "dataset", "data", "split", "val_split", "val_fraction", "fold", "folds", "seed", "split_seed", "preset", "set",
    "batch_size", "lr", "lr_step", "warmup_iters", "iterations",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rfnet.train",
        description=__doc__.split("\n\n")[0] + " Paper defaults; see --help of each option.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""validation (pick one; default --val-fraction 0.1):
  --val-split NAME         another split of the dataset (REFUGE: validation; folder: ROOT/NAME/{images,masks})
  --val-data-root PATH     another root of the same dataset kind (e.g. a second generated folder)
  --fold K --folds N       k-fold cross-validation by item name, K in 0..N-1 (Drishti-GS: --folds 5)
  --val-fraction F         random fraction F of the training items (0 = no validation)

learning-rate schedule: lr x gamma every --lr-step epochs, after a linear warm-up of
--warmup-iters iterations. With --epochs different from the preset's (100), the step is
scaled with it (round(30 * epochs / 100), at least 1) unless --lr-step is given.

examples:
  python -m rfnet.data.synthetic --out syn/train --n 200 --seed 1
  python -m rfnet.data.synthetic --out syn/val --n 50 --seed 2 --prefix val
  python -m rfnet.train --dataset folder --data-root syn/train --val-data-root syn/val \\
      --preset light --epochs 12 --max-time-min 20 --device cpu --out runs/syn
  python -m rfnet.train --dataset refuge --data-root REFUGE --val-split validation --out runs/refuge
  python -m rfnet.train --dataset drishti-gs --data-root Drishti-GS1_files --fold 0 --folds 5 --out runs/dgs_f0
  python -m rfnet.train --preset screen --data kind=drishti-gs,root=DATA \
      --data kind=refuge,root=DATA/REFUGE,split=validation \
      --data kind=rim-one-dl,root=DATA/RIM-ONE_DL,partition=randomly --fold 0 --out runs/screen_f0
  python -m rfnet.train --out runs/refuge --resume          # continue after an interruption
""",
    )
    g = p.add_argument_group("data")
    add_data_arguments(g, required_unless="--data or --resume")
    g.add_argument("--split", help="training split (default: the loader's train split; folder: ROOT itself)")
    g.add_argument("--val-split", help="validation split name (see below)")
    g.add_argument("--val-data-root", help="validation data root of the same dataset kind (see below)")
    g.add_argument("--val-fraction", type=float, help="fraction of training items held out for validation")
    g.add_argument("--fold", type=int, help="k-fold: validation fold index, 0..folds-1")
    g.add_argument("--folds", type=int, help="k-fold: number of folds (default 5)")
    g.add_argument("--strict", action="store_true", help="fail on the first bad item instead of skipping it")
    g.add_argument("--val-every", type=int, default=1,
                   help="validate every N epochs (default 1); the last epoch is always validated")
    g = p.add_argument_group("model and schedule")
    g.add_argument("--preset", choices=sorted(PRESETS), help="model preset (default paper)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", default=None,
                   help="override a config value, e.g. --set mask_head.pooling=pyramid --set input.size=256 (repeatable)")
    g.add_argument("--epochs", type=int, help="epochs (default: preset, 100)")
    g.add_argument("--iterations", type=int,
                   help="train for this many iterations instead of --epochs (epochs = ceil(N / iterations per epoch))")
    g.add_argument("--batch-size", type=int, help="images per batch (default 4)")
    g.add_argument("--lr", type=float, help="base learning rate (default 0.01)")
    g.add_argument("--lr-step", type=int, help="epochs between x0.1 learning-rate steps (default: 30, scaled with --epochs)")
    g.add_argument("--warmup-iters", type=int, help="linear warm-up iterations (default: preset, 100)")
    g.add_argument("--seed", type=int, help="random seed for init, shuffling, augmentation and splits (default 0)")
    g.add_argument("--split-seed", type=int,
                   help="seed of the --fold / --val-fraction split only (default: --seed): another --seed on the same "
                        "split measures how much a result moves from run to run (rfnet evaluate --seed takes it)")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run directory (new or empty, unless --resume / --overwrite)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint_last.pt")
    g.add_argument("--overwrite", action="store_true", help="start afresh in a non-empty --out (replaces its files)")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    g.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default 0: in-process)")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: CPUs available to this process; on a CPU shared with other "
                        "busy processes, 1 thread can be several times faster than oversubscribing)")
    g.add_argument("--max-time-min", type=float,
                   help="time budget: no new epoch starts unless it is expected to end within it")
    g.add_argument("--sync-bn", action="store_true",
                   help="torchrun: SyncBatchNorm across processes (same as --set train.sync_bn=true)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("-v", "--verbose", action="store_true")
    return p


def resolve_config(args: argparse.Namespace) -> ModelConfig:
    """Preset -> --set overrides -> explicit flags; scales the LR step with --epochs."""
    cfg = get_preset(args.preset or "paper")
    preset_epochs, preset_step = cfg.train.epochs, cfg.train.lr_step_epochs
    cfg = apply_overrides(cfg, args.set or [])
    t = cfg.train
    if args.epochs is not None:
        t.epochs = args.epochs
    if args.iterations is not None:
        if args.iterations < 1:
            raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
        t.iterations = args.iterations
    if args.batch_size is not None:
        t.batch_size = args.batch_size
    if args.lr is not None:
        t.lr = args.lr
    if args.warmup_iters is not None:
        t.warmup_iters = args.warmup_iters
    if args.lr_step is not None:
        t.lr_step_epochs = args.lr_step
    elif t.epochs != preset_epochs and t.lr_step_epochs == preset_step:
        # keep the paper's shape (steps at 30 %, 60 %, 90 % of training) for shorter runs
        t.lr_step_epochs = max(1, round(preset_step * t.epochs / preset_epochs))
    for name, value in (("epochs", t.epochs), ("batch_size", t.batch_size), ("lr_step_epochs", t.lr_step_epochs)):
        if value < 1:
            raise ValueError(f"train.{name} must be >= 1, got {value}")
    if not t.lr > 0:
        raise ValueError(f"train.lr must be > 0, got {t.lr}")
    return cfg


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty --out unless resuming or overwriting (nothing is deleted here)."""
    if resume:
        if not RunFiles(out).last.is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no {RunFiles(out).last.name})")
        return
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: not empty; pass --resume to continue that run or --overwrite to start afresh")


def _clear_old_run(out: Path) -> None:
    """--overwrite: remove the previous run's outputs so no stale best checkpoint survives."""
    for f in RunFiles(out).all():
        if f.is_file():
            f.unlink()


def _resume_state(args: argparse.Namespace, out: Path) -> tuple[ModelConfig, TrainState]:
    """Load checkpoint_last.pt; the run's settings replace the command line's (with a warning)."""
    state = TrainState.load(RunFiles(out).last)
    saved = state.args
    for name in RUN_ARGS:
        given = getattr(args, name)
        if given is not None and given != saved.get(name):
            log.warning("--%s %s ignored on --resume (the run uses %s)", name.replace("_", "-"), given, saved.get(name))
        setattr(args, name, saved.get(name))
    for name in ("data_root", "val_data_root"):
        if getattr(args, name) is None:
            setattr(args, name, saved.get(name))
    cfg = state.config
    if args.epochs is not None and args.epochs != cfg.train.epochs:
        log.info("resume: training length changed from %d to %d epochs", cfg.train.epochs, args.epochs)
        cfg.train.epochs = args.epochs
    return cfg, state


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    elif hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def _selection(args: argparse.Namespace) -> DataSelection:
    return DataSelection(
        dataset=args.dataset, data_root=args.data_root, split=args.split, data=args.data, val_split=args.val_split,
        val_data_root=args.val_data_root, val_fraction=args.val_fraction, fold=args.fold,
        folds=5 if args.folds is None else args.folds, strict=args.strict,
        seed=next((v for v in (args.split_seed, args.seed) if v is not None), 0),
    )


def _prepare(args: argparse.Namespace, parser: argparse.ArgumentParser, info: DistInfo
             ) -> tuple[ModelConfig, TrainState | None]:
    """Check --out, load the resume state or resolve the config (ValueError / FileNotFoundError on bad input)."""
    out = Path(args.out)
    if info.is_main:  # the other ranks would see rank 0's first files
        _check_out(out, args.resume, args.overwrite)
    if args.resume:
        return _resume_state(args, out)
    args.data = data_specs(args.data, args.data_config)
    if not args.data and (args.dataset is None or args.data_root is None):
        parser.error("--dataset and --data-root (or --data, repeatable) are required (unless --resume)")
    if args.sync_bn:
        args.set = [*(args.set or []), "train.sync_bn=true"]
    return resolve_config(args), None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    info = DistInfo.from_env()
    setup_logging(args.verbose)
    if not info.is_main:  # one log: rank 0's
        logging.getLogger().setLevel(logging.WARNING)
    _set_threads(args.threads)
    try:
        cfg, state = _prepare(args, parser, info)
        if args.fold is not None and (args.folds or 5) < 2:
            parser.error("--folds must be >= 2")
        sel = _selection(args)
        train_ds, val_ds, val_desc = select_datasets(sel)
        if cfg.train.fit_expert_scale and state is None:
            (a, b), n = dataset_expert_scale(train_ds)
            cfg.grading.vcdr_expert_scale = (a, b)
            log.info("vCDR on the experts' scale: %.4f * vcdr %+.4f (fitted on the ground truth of %d training "
                     "images; grading.vcdr_expert_scale)", a, b, n)
        device = resolve_device(args.device)
        if cfg.train.sync_bn and info.enabled and device.type != "cuda":
            raise ValueError("--sync-bn / train.sync_bn needs GPUs: PyTorch's SyncBatchNorm runs only on CUDA "
                             "(with gloo on CPUs, train without it)")
        device = init_distributed(info, device)
        if args.overwrite and not args.resume and info.is_main:  # only once the new run's inputs are known good
            _clear_old_run(Path(args.out))
    except (ValueError, FileNotFoundError, RuntimeError, OutputExistsError) as exc:  # CheckpointError is a ValueError
        log.error("%s", exc)
        return ExitCode.USAGE
    args.folds, args.split_seed, args.seed = sel.folds, sel.seed, 0 if args.seed is None else args.seed
    log.info("train: %s (%d items); validation: %s", train_ds, len(train_ds), val_desc)
    run_args: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("resume", "overwrite", "out")}
    try:
        summary = run_training(
            cfg, train_ds, val_ds, RunFiles(Path(args.out)), device=device, seed=args.seed, workers=args.workers,
            run_args=run_args, resume=state, val_every=args.val_every, dist_info=info,
            max_time_s=None if args.max_time_min is None else args.max_time_min * 60.0,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except KeyboardInterrupt:
        log.error("interrupted; continue with: python -m rfnet.train --out %s --resume", args.out)
        return ExitCode.INTERRUPTED
    except UsageError as exc:  # the config's model does not build (before any step)
        log.error("%s", exc)
        return ExitCode.USAGE
    except (SampleError, NonFiniteLossError) as exc:  # bad data in strict mode, non-finite loss
        log.error("%s", exc)
        return ExitCode.FAILED
    finally:
        shutdown(info)
    best = summary.get("best_score")
    if val_ds is None:  # the "best" score is minus the training loss: not worth a line of its own
        chosen = "no validation set: export checkpoint_last.pt"
    else:
        chosen = (f"best validation mean Dice {'n/a' if best is None or math.isnan(best) else f'{best:.4f}'} "
                  f"at epoch {summary.get('best_epoch')}")
    log.info("done: %d epochs in %.1f min; %s; outputs in %s", summary["epochs_done"], summary["elapsed_s"] / 60.0,
             chosen, args.out)
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
