"""rfnet.training.loop's bfloat16 choice: native bf16 only, float32 (with a warning) elsewhere."""
from __future__ import annotations

import logging

import pytest
import torch

from rfnet.training import loop


def _cpu_features(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_torch_cpu_has_the_feature_queries_native_bf16_reads() -> None:
    # if a torch release renames them, native_bf16 would silently say "no": fail here instead
    assert callable(torch.cpu._is_avx512_bf16_supported) and callable(torch.cpu._is_amx_tile_supported)


@pytest.mark.parametrize(("avx512_bf16", "amx", "native"),
                         [(False, False, False), (True, False, True), (False, True, True), (True, True, True)])
def test_native_bf16_on_the_cpu_follows_avx512_bf16_or_amx(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool,
                                                           amx: bool, native: bool) -> None:
    _cpu_features(monkeypatch, avx512_bf16, amx)
    assert loop.native_bf16("cpu") is native


def test_native_bf16_is_false_on_other_devices_and_asks_cuda_there(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_features(monkeypatch, True, True)
    assert loop.native_bf16("mps") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert loop.native_bf16("cuda") is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loop.native_bf16("cuda") is True


def test_resolve_bf16_falls_back_to_float32_with_a_warning_where_bf16_is_emulated(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _cpu_features(monkeypatch, False, False)
    with caplog.at_level(logging.WARNING, logger=loop.__name__):
        assert loop.resolve_bf16(True, "cpu") is False
    assert "no native bfloat16" in caplog.text and "float32" in caplog.text
    caplog.clear()
    assert loop.resolve_bf16(False, "cpu") is False and not caplog.text
    _cpu_features(monkeypatch, True, False)
    assert loop.resolve_bf16(True, "cpu") is True and not caplog.text
