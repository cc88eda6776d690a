"""One training epoch: forward the losses, backward, clip, step; averaged loss values.

Kept apart from the CLI so tests and notebooks can drive it with any iterable of batches.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rfnet.errors import RFNetError

log = logging.getLogger(__name__)

#: batch -> (images float32 [B,3,S,S], targets list of B dicts as in docs/design.md)
Unpack = Callable[[Any], tuple[Tensor, list[dict[str, Tensor]]]]


class NonFiniteLossError(RFNetError, RuntimeError):
    """A loss became NaN or infinite; the message names the loss and the iteration."""


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether this machine computes bfloat16 in hardware: on the CPU, AVX512_BF16 or AMX
    (elsewhere oneDNN emulates it, far slower than float32); on CUDA, what the device reports."""
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    # torch.cpu's feature queries are the ones PyTorch's own tests use; absent ones count as no
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(check()) for check in checks if check is not None)


def resolve_bf16(requested: bool, device_type: str = "cpu") -> bool:
    """``train.bf16`` as it can run here: off, with a warning, where bfloat16 is not native.

    bf16 is meant as a speed option, so a machine without it trains the same recipe in float32
    rather than crawl through emulation (a preset's cross-validated figures are those of the
    precision it was trained in; docs/lab/results-log.md says which).
    """
    if requested and not native_bf16(device_type):
        log.warning("train.bf16 is set but this %s has no native bfloat16 (CPU: AVX512_BF16 or AMX): "
                    "training in float32, which is much faster here than emulated bfloat16", device_type.upper())
        return False
    return requested


def autocast_context(bf16: bool, device_type: str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast for the forward pass (``train.bf16``), or a no-op."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def prepare_model(model: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """Apply the speed options in place: channels-last weights, ``torch.compile`` of the
    backbone and FPN (the fixed-shape part; the heads have data-dependent shapes)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        for name in ("backbone", "fpn"):
            setattr(model, name, torch.compile(getattr(model, name)))
    return model


def _to_device(targets: list[dict[str, Tensor]], device: torch.device) -> list[dict[str, Tensor]]:
    return [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


def _train_step(model: nn.Module, images: Tensor, targets: list[dict[str, Tensor]],
                optimizer: torch.optim.Optimizer, device: torch.device, *, bf16: bool, grad_clip: float | None,
                where: str) -> dict[str, float]:
    """One forward, backward and update on a batch (images [B,3,S,S] on ``device``): each loss
    as a float, plus ``"loss"`` (their sum). NonFiniteLossError names ``where``."""
    with autocast_context(bf16, device.type):
        losses: dict[str, Tensor] = model(images, targets)
        total_loss = sum((v.float() for v in losses.values()), torch.zeros((), device=device))
    if not torch.isfinite(total_loss):
        bad = {k: float(v) for k, v in losses.items()}
        raise NonFiniteLossError(f"{where}: non-finite loss {bad}; lower --lr or lengthen --warmup-iters")
    optimizer.zero_grad(set_to_none=True)
    total_loss.backward()
    if grad_clip is not None and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    out = {k: float(v.detach()) for k, v in losses.items()}
    out["loss"] = float(total_loss.detach())
    return out


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    unpack: Unpack,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    *,
    grad_clip: float | None = None,
    epoch: int = 0,
    total: int | None = None,
    progress: bool = True,
    log_every: int = 0,
    bf16: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Train ``model`` over ``batches`` once; the scheduler steps every iteration.

    ``bf16`` runs the forward pass under bfloat16 autocast; ``channels_last`` feeds the
    images in channels-last memory format (with a model prepared by :func:`prepare_model`).
    Without a progress bar, ``log_every > 0`` logs the running mean loss every that many
    iterations instead (runs whose output goes to a file).

    Returns:
        mean of each loss over the epoch's iterations, plus ``"loss"`` (their sum) and
        ``"lr"`` (the learning rate of the last iteration). Empty batches (every item of
        the batch skipped as unreadable) are passed over.
    Raises:
        NonFiniteLossError: a loss is NaN / inf (the usual cause is a too-high learning
        rate or a too-short warm-up; the message says so).
    """
    model.train()
    sums: dict[str, float] = {}
    n = 0
    lr = optimizer.param_groups[0]["lr"]
    bar = tqdm(batches, total=total, desc=f"epoch {epoch + 1}", unit="batch", disable=not progress, leave=False)
    for batch in bar:
        images, targets = unpack(batch)
        if images.shape[0] == 0:
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = optimizer.param_groups[0]["lr"]
        step = _train_step(model, images, _to_device(targets, device), optimizer, device, bf16=bf16,
                           grad_clip=grad_clip, where=f"epoch {epoch + 1}, iteration {n + 1}")
        scheduler.step()
        n += 1
        for k, v in step.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", lr=f"{lr:.2g}")
        if not progress and log_every > 0 and n % log_every == 0:
            log.info("epoch %d: iteration %d/%s, mean loss %.4f, lr %.2g", epoch + 1, n, total or "?", sums["loss"] / n, lr)
    bar.close()
    means = {k: v / max(1, n) for k, v in sums.items()}
    means["lr"] = float(lr)
    means["iterations"] = float(n)
    if n and not all(math.isfinite(v) for v in means.values()):
        raise NonFiniteLossError(f"epoch {epoch + 1}: non-finite mean loss {means}")
    return means
