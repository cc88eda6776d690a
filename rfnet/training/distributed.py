"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m rfnet.train ...`` starts N processes and sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them, joins the process
group (NCCL on GPUs, gloo on CPUs) and picks this process's device. Without those variables
everything here is a no-op for a single process, so the trainer has one code path.

Conventions (README, "Training on several GPUs"): ``--batch-size`` is per process, the
global batch is ``batch_size x WORLD_SIZE``; the learning rate is used as given (scale it
yourself, e.g. linearly with the global batch); rank 0 alone validates, logs, plots and
writes checkpoints; every rank reads the checkpoint on ``--resume``.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (absent: single process)."""
        try:
            return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                       int(os.environ.get("LOCAL_RANK", "0")))
        except ValueError as exc:
            raise ValueError(f"torchrun environment variables are not integers: {exc}") from None


def init_distributed(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group when ``info.enabled``; return this rank's device.

    GPUs: NCCL and ``cuda:LOCAL_RANK`` (one GPU per process); CPUs: gloo.
    """
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    log.info("rank %d of %d (%s, %s)", info.rank, info.world_size, backend, device)
    return device


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel (+ SyncBatchNorm if asked) when distributed, else ``model``."""
    if not info.enabled:
        if sync_bn:
            log.warning("train.sync_bn has no effect in a single process")
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (for validation and checkpoints)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_across(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average per-rank numbers (the epoch's mean losses) over the ranks."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def agree(info: DistInfo, flag: bool) -> bool:
    """True on every rank when rank 0 says so (rank 0 decides, e.g. the time budget)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (on every rank); ``[obj]`` for a single process."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
