"""torchrun-style data parallelism: 2 processes with gloo on the CPU, a tiny model, 4 images.

Checks that both ranks end with identical parameters (DistributedDataParallel averages the
gradients) and that the first iteration's loss, averaged over the ranks (2 images each),
matches one process training on the same 4 images. They cannot match exactly: BatchNorm
normalises over 2 images instead of 4 and the RPN / box-head sampling draws different RoIs,
so the tolerance is 10 % of the loss (measured: a few per cent).
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rfnet.config import ModelConfig, get_preset
from rfnet.data import load_dataset
from rfnet.data.synthetic import generate_folder
from rfnet.training.overrides import apply_overrides
from rfnet.training.run import RunFiles, run_training

TINY = [
    "input.size=64", "anchors.sizes=[8,16,32,64]", "fpn.out_channels=16", "rpn.pre_nms_top_n_train=100",
    "rpn.post_nms_top_n_train=50", "rpn.pre_nms_top_n_test=50", "rpn.post_nms_top_n_test=50",
    "roi_heads.batch_size_per_image=32", "roi_heads.representation_size=32", "mask_head.mask_size=28",
    "mask_head.channels=16", "train.augment=false", "train.warmup_iters=0", "train.lr=0.005", "train.epochs=2",
]


def _cfg(batch_size: int) -> ModelConfig:
    cfg = apply_overrides(get_preset("light"), TINY)
    cfg.train.batch_size = batch_size
    return cfg


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    import os

    from rfnet.training.distributed import DistInfo, init_distributed, shutdown

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    info = DistInfo.from_env()
    device = init_distributed(info, torch.device("cpu"))
    try:
        summary = run_training(_cfg(2), load_dataset("folder", data), None, RunFiles(Path(out) / "run"),
                               device=device, seed=3, progress=False, dist_info=info)
        params = {k: v.detach() for k, v in summary["model"].named_parameters()}
        torch.save({"params": params}, Path(out) / f"rank{rank}.pt")
    finally:
        shutdown(info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_processes_match_each_other_and_one_process(tmp_path: Path) -> None:
    generate_folder(tmp_path / "data", n=4, size=64, seed=11)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "data"), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # parameters are identical; BatchNorm running statistics are per rank (DDP broadcasts rank 0's
    # before every forward, and rank 0's are the ones checkpointed)
    assert r0["params"].keys() == r1["params"].keys() and len(r0["params"]) > 50
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), f"ranks differ at {k}"
    # rank 0 wrote the run files, once
    files = RunFiles(tmp_path / "run")
    assert files.last.is_file() and files.metrics.is_file()
    rows = files.metrics.read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs

    torch.set_num_threads(1)
    single = run_training(_cfg(4), load_dataset("folder", tmp_path / "data"), None, RunFiles(tmp_path / "single"),
                          device=torch.device("cpu"), seed=3, progress=False)
    first_ddp = float(files.metrics.read_text().splitlines()[1].split(",")[2])  # epoch 1 loss (1 iteration)
    first_single = float((tmp_path / "single" / "metrics.csv").read_text().splitlines()[1].split(",")[2])
    assert first_ddp == pytest.approx(first_single, rel=0.10)
