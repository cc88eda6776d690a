from __future__ import annotations

import pytest

from rfnet.summary import main, measure


def test_measure_light_small_input() -> None:
    r = measure("light", 128)
    assert r["params"] == 1_501_287  # light preset: MobileNet-v1 x0.25 + FPN 64 + heads
    per = r["per_module"]
    assert set(per) == {"backbone", "fpn", "rpn", "roi_heads", "mask_head"}  # type: ignore[arg-type]
    assert r["gflops"] == pytest.approx(sum(per.values()), rel=1e-6)  # type: ignore[union-attr, arg-type]
    assert per["mask_head"] > 8.0  # type: ignore[index]  # K=10 RoIs at 56x56 regardless of input size


def test_cli_rejects_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--size", "100"])
    assert exc.value.code == 2 and "multiple of 32" in capsys.readouterr().err


def test_set_overrides_the_preset(capsys: pytest.CaptureFixture[str]) -> None:
    plain = measure("light", 128)
    narrow = measure("light", 128, ("fpn.out_channels=32",))
    assert narrow["params"] < plain["params"]  # type: ignore[operator]
    assert narrow["per_module"]["fpn"] < plain["per_module"]["fpn"]  # type: ignore[index]
    assert narrow["per_module"]["backbone"] == plain["per_module"]["backbone"]  # type: ignore[index]
    assert main(["--preset", "light", "--size", "128", "--set", "fpn.out_channels=32"]) == 0
    assert f"{narrow['params']:,}" in capsys.readouterr().out


def test_bad_set_is_a_usage_error() -> None:
    assert main(["--preset", "light", "--size", "128", "--set", "fpn.channels=32"]) == 2
