"""Timing statistics, memory probes, packed masks and the parity rules (no models)."""
from __future__ import annotations

import numpy as np
import pytest

from rfnet.benchmarks.endtoend import PackedMasks, summarize_accuracy
from rfnet.benchmarks.measure import MemoryProbe, latency_stats, parse_nvidia_smi_apps, speedup, time_model
from rfnet.benchmarks.parity import ParityRules, check_result, overall
from rfnet.common.metrics import agreement


def test_latency_stats_percentiles() -> None:
    s = latency_stats([float(v) for v in range(1, 101)])  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["min"] == 1.0 and s["max"] == 100.0 and s["n"] == 100
    assert latency_stats([])["p50"] is None
    assert speedup(8.2) == pytest.approx(2.0) and speedup(None) is None


def test_time_model_counts_calls() -> None:
    calls = []
    res = time_model(lambda feed: calls.append(1), {"image": np.zeros(1)}, 4, warmup=2, iterations=5, progress=False)
    assert len(calls) == 7 and res["latency_ms"]["n"] == 5 and res["batch_size"] == 4
    assert res["throughput_fps"] == pytest.approx(4000.0 / res["latency_ms"]["mean"])
    with pytest.raises(ValueError):
        time_model(lambda feed: None, {}, 1, warmup=0, iterations=0, progress=False)


def test_nvidia_smi_parsing() -> None:
    text = "1234, 512\n999, 100\n1234, 256\n"
    assert parse_nvidia_smi_apps(text, 1234) == 768.0
    assert parse_nvidia_smi_apps(text, 5) == 0.0


def test_memory_probe_sees_an_allocation() -> None:
    probe = MemoryProbe().start()
    block = np.ones(64 * 2**20, np.uint8)  # 64 MiB touched
    res = probe.result()
    del block
    assert res["peak_rss_mb"] >= res["rss_before_mb"]
    if probe.per_backend:  # Linux with clear_refs: the peak is this block's, not the process's
        assert res["peak_rss_increase_mb"] >= 60


def test_packed_masks_roundtrip_and_agreement() -> None:
    rng = np.random.default_rng(0)
    disc = rng.random((37, 53)) > 0.5
    cup = disc & (rng.random((37, 53)) > 0.5)
    d, c = PackedMasks.pack(disc, cup).unpack()
    assert np.array_equal(d, disc) and np.array_equal(c, cup)
    empty = np.zeros((4, 4), bool)
    assert agreement(empty, empty) == 1.0  # identical (empty) predictions agree
    full = np.ones((4, 4), bool)
    assert agreement(empty, full) == 0.0


def _res(dice_disc: float, dice_cup: float, precision: str = "fp32", images: int = 10, **extra) -> dict:
    acc = summarize_accuracy([{"dice_disc": dice_disc, "dice_cup": dice_cup}], [], 1)
    return {"id": f"m-{precision}", "status": "ok", "precision": precision, "accuracy": acc,
            "end_to_end": {"images": images, "failed_images": 10 - images}, **extra}


def test_parity_thresholds_by_precision() -> None:
    ref = _res(0.95, 0.85)
    rules = ParityRules()
    assert check_result(_res(0.9495, 0.8505, "fp16"), ref, rules)["passed"] is True  # 0.05 point
    v = check_result(_res(0.948, 0.85, "fp16"), ref, rules)  # 0.2 point
    assert v["passed"] is False and "disc Dice" in v["failures"][0]
    assert check_result(_res(0.945, 0.841, "int8"), ref, rules)["passed"] is True  # within 1 point
    assert check_result(_res(0.935, 0.85, "int8"), ref, rules)["passed"] is False  # 1.5 points
    # better than the reference by more than the tolerance: the masks are not the same either
    assert check_result(_res(0.97, 0.85, "fp32"), ref, rules)["passed"] is False
    # configurable
    assert check_result(_res(0.935, 0.85, "int8"), ref, ParityRules({"fp32": 0.001, "fp16": 0.001, "int8": 0.02}))["passed"]


def test_parity_failures_and_not_run() -> None:
    ref = _res(0.95, 0.85)
    rules = ParityRules()
    lost = check_result(_res(0.95, 0.85, images=8), ref, rules)
    assert lost["passed"] is False and "processed 8 images" in lost["failures"][0]
    nan = check_result({"id": "x", "status": "ok", "precision": "fp32", "end_to_end": {"images": 10},
                        "accuracy": summarize_accuracy([], [], 10)}, ref, rules)
    assert nan["passed"] is False and "no disc Dice" in nan["failures"][0]
    crashed = check_result({"id": "y", "status": "failed", "reason": "boom"}, ref, rules)
    assert crashed["passed"] is False and "boom" in crashed["failures"][0]
    skipped = check_result({"id": "z", "status": "not run", "reason": "no GPU"}, ref, rules)
    assert skipped["checked"] is False and skipped["passed"] is None
    timing = check_result(_res(0.95, 0.85, model_only={"4": {"status": "failed", "reason": "shape"}}), ref, rules)
    assert timing["passed"] is False and "batch 4" in timing["failures"][0]
    results = [{"id": "y", "status": "failed", "parity": crashed}, {"id": "z", "status": "not run", "parity": skipped}]
    verdict = overall(results)
    assert verdict["passed"] is False and verdict["failed"][0]["id"] == "y" and verdict["not_run"] == ["z"]


def test_ground_truth_fold_is_the_held_out_part(bench_data) -> None:
    from rfnet.benchmarks.endtoend import load_ground_truth
    from rfnet.data.splits import kfold_split

    everything, _ = load_ground_truth("folder", bench_data, None, None, progress=False)
    names = sorted(g.name for g in everything)
    folds = kfold_split(names, 2, 0)
    got = [sorted(g.name for g in load_ground_truth("folder", bench_data, None, None, progress=False,
                                                     fold=k, folds=2, seed=0)[0]) for k in (0, 1)]
    assert got == [sorted(folds[0][1]), sorted(folds[1][1])]
    assert sorted(got[0] + got[1]) == names and got[0] and got[1]
    with pytest.raises(ValueError, match="--fold must be in 0..1"):
        load_ground_truth("folder", bench_data, None, None, progress=False, fold=2, folds=2)
